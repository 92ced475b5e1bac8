"""torch.compile: the selective scan is a torch.library custom op (`msvmamba::selective_scan`), so a compiled Mamba
mixer or MSV-Mamba network traces in one graph, with the scan opaque, and gives eager's outputs and gradients.

On the CPU with the pure-PyTorch backend. Dynamo and AOTAutograd do the tracing that matters here (custom op,
fake tensors, the autograd formula); `aot_eager` skips only Inductor's code generation, which takes tens of
seconds per graph on a CPU, so the network test uses it, and one small mixer test runs Inductor itself.
"""
from __future__ import annotations

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

import nnunetv2_msvmamba.ssm.custom_op as custom_op
from helpers.network_fixtures import PLAIN_2D, plans
from helpers.scan_cases import INPUT_NAMES, ScanCase
from nnunetv2_msvmamba.ssm import Mamba, selective_scan_torch
from nnunetv2_msvmamba.training.network_from_plans import msvmamba_from_plans

TOLERANCE = 1e-5  # relative to the largest magnitude: compiled graphs may reorder float32 arithmetic


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def assert_close(ours: torch.Tensor, reference: torch.Tensor, floor: float = 1e-12) -> None:
    """max|ours - reference| within TOLERANCE of the reference's largest magnitude (at least `floor`)."""
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max() <= TOLERANCE * max(reference.abs().max().item(), floor)


def assert_all_close(ours: list[torch.Tensor], references: list[torch.Tensor]) -> None:
    """Each tensor at its own scale, a gradient that should be zero (a conv bias before a normalisation) at a
    hundredth of the largest one's scale, where rounding noise lives."""
    largest = max(reference.abs().max().item() for reference in references)
    for mine, reference in zip(ours, references, strict=True):
        assert_close(mine, reference, floor=1e-2 * largest)


def outputs_and_gradients(function, module: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    leaf = x.clone().requires_grad_()
    outputs = function(leaf)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    loss = sum((output.float() * torch.linspace(-1, 1, output.numel()).reshape(output.shape)).sum()
               for output in outputs)
    return [*outputs, *torch.autograd.grad(loss, [leaf, *module.parameters()])]


def test_custom_op_passes_opcheck() -> None:
    """Fake (meta) kernel, schema and autograd registration agree with the real op."""
    case = ScanCase(batch=2, dim=4, length=7, dstate=3, b_layout="shared", c_layout="grouped")
    inputs = {name: None if value is None else value.float().requires_grad_() for name, value in case.inputs().items()}
    torch.library.opcheck(custom_op._selective_scan_forward,
                          (*(inputs[name] for name in INPUT_NAMES), True))


def test_custom_op_matches_the_scan() -> None:
    case = ScanCase(batch=2, dim=4, length=7, dstate=3, b_layout="constant", c_layout="grouped", with_z=False)
    inputs = {name: None if value is None else value.float() for name, value in case.inputs().items()}
    for scan in (custom_op.selective_scan_op, selective_scan_torch):
        leaves = {name: None if t is None else t.clone().requires_grad_() for name, t in inputs.items()}
        out, last_state = scan(*(leaves[name] for name in INPUT_NAMES), delta_softplus=True, return_last_state=True)
        present = [leaf for leaf in leaves.values() if leaf is not None]
        results = (out, last_state, *torch.autograd.grad(out.square().sum(), present))
        if scan is custom_op.selective_scan_op:
            expected = results
        else:
            for ours, reference in zip(expected, results):
                assert_close(ours, reference)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_mamba_mixer_in_one_graph_matches_eager(backend: str) -> None:
    torch.manual_seed(0)
    mixer = Mamba(d_model=8, d_state=4)
    x = torch.randn(2, 7, 8)
    compiled = torch.compile(mixer.forward_bidirectional, backend=backend, fullgraph=True)  # no graph break
    assert_all_close(outputs_and_gradients(compiled, mixer, x),
                     outputs_and_gradients(mixer.forward_bidirectional, mixer, x))


def test_compiled_msvmamba_network_matches_eager() -> None:
    """A tiny 2D MSV-Mamba network with LMS on every decoder stage and deep supervision, as the trainer runs it."""
    torch.manual_seed(0)
    configuration = PlansManager(plans(PLAIN_2D, "2d", (32, 32))).get_configuration("2d")
    network = msvmamba_from_plans(configuration, 1, 3, True, lms_max_positions=None)
    x = torch.randn(1, 1, 32, 32)
    compiled = torch.compile(network, backend="aot_eager")
    assert_all_close(outputs_and_gradients(compiled, network, x), outputs_and_gradients(network, network, x))
