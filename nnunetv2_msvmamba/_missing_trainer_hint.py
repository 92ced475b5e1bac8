"""Adds one line to nnU-Net's "Could not find requested nnunet trainer" error for our trainers: how to make
them findable. Loaded at interpreter start by the installed `nnunetv2_msvmamba_hint.pth`; it only wraps
sys.excepthook, imports nothing heavy and never changes nnU-Net's behaviour."""
import sys

HINT = ('\nnnunetv2-msvmamba: nnU-Net does not know where the MSV-Mamba trainers are. Run\n'
        '    eval "$(msvmamba_env)"\n'
        'in this shell (or add the line it prints to ~/.bashrc) and run the command again.\n')


def needs_hint(error: BaseException) -> bool:
    message = str(error)
    return "Could not find requested nnunet trainer" in message and "MSVMamba" in message


def install() -> None:
    previous_hook = sys.excepthook

    def hook(exc_type, exc, traceback):
        previous_hook(exc_type, exc, traceback)
        if needs_hint(exc):
            sys.stderr.write(HINT)

    sys.excepthook = hook
