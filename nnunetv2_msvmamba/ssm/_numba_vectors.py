"""Explicit float32 vector code for the Numba scan kernels' loops over the states (imported only where those kernels
run: it imports numba).

A step of the scan loops over the n states, and for each over a block's lanes (channels). LLVM vectorises the loop
over the lanes, but cannot tell the kernels' arrays apart, so within a step it reloads the step's own vectors
(delta, delta u, dy) at every state, keeps the sums over the states (y; in the backward d(delta u) and the exponent's
gradient) in memory, loading and storing them at every state, and spills the arrays' pointers to the stack: a
quarter of the backward's adjoint loop was reloads of pointers. Here a step is written with explicit vectors of
VECTOR float32 lanes: the step's vectors are loaded once, the sums over the states stay in registers, and only the
per-state rows (A, the states, their decays, the adjoint's carry, dA) are read or written per state. Each intrinsic
does exactly what its plain-Python twin in _numba_kernels does (`recurrence_step`, `adjoint_step`), in the same
order of operations.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

VECTOR = 16  # float32 lanes of one vector: an AVX-512 register (LLVM splits it where registers are narrower)
FAST = ("contract", "reassoc", "nsz", "arcp")  # the kernels' fastmath flags (no assumption about NaN or infinity)
MANTISSA_BITS = 23
_INDEX = ir.IntType(64)
_FLOAT_VECTOR = ir.VectorType(ir.FloatType(), VECTOR)
_INT_VECTOR = ir.VectorType(ir.IntType(32), VECTOR)


def source_digest(*files: Path) -> str:
    """A digest of the source of `files` (default: this module): the kernels close over it, so that it is part of
    their key in Numba's on-disk cache (which otherwise follows only the kernels' own file, not the files whose
    functions they inline), and a change there recompiles them."""
    digest = hashlib.sha256()
    for file in files or (Path(__file__),):
        digest.update(file.read_bytes())
    return digest.hexdigest()


class _VectorCode:
    """Builds float32 vector instructions over the data of an intrinsic's array arguments (C-contiguous), rows of
    `row` floats."""

    def __init__(self, context, builder, signature, args, row: int):
        self.builder, self.row = builder, row
        self.pointers = [context.make_array(ty)(context, builder, value).data if isinstance(ty, types.Array) else None
                         for ty, value in zip(signature.args, args)]
        self.shapes = [cgutils.unpack_tuple(builder, context.make_array(ty)(context, builder, value).shape)
                       if isinstance(ty, types.Array) else None for ty, value in zip(signature.args, args)]

    def present(self, argument: int) -> bool:
        return self.pointers[argument] is not None

    def offset(self, vector: int, row=None):
        """The element offset of vector `vector` of the row `row` (an index value; None: a single row)."""
        first = ir.Constant(_INDEX, vector * VECTOR)
        return first if row is None else self.builder.add(self.builder.mul(row, ir.Constant(_INDEX, self.row)), first)

    def _vector_pointer(self, argument: int, offset):
        element = self.builder.gep(self.pointers[argument], [offset])
        return self.builder.bitcast(element, _FLOAT_VECTOR.as_pointer())

    def load(self, argument: int, offset):
        return self.builder.load(self._vector_pointer(argument, offset), align=4)

    def store(self, value, argument: int, offset) -> None:
        self.builder.store(value, self._vector_pointer(argument, offset), align=4)

    def load_row(self, argument: int) -> list:
        """A (lanes,) argument's vectors."""
        return [self.load(argument, self.offset(v)) for v in range(self.row // VECTOR)]

    def load_scalar(self, argument: int, index):
        return self.builder.load(self.builder.gep(self.pointers[argument], [index]))

    def store_scalar(self, value, argument: int, index) -> None:
        self.builder.store(value, self.builder.gep(self.pointers[argument], [index]))

    def broadcast(self, scalar):
        single = self.builder.insert_element(ir.Constant(_FLOAT_VECTOR, ir.Undefined), scalar, ir.Constant(_INDEX, 0))
        return self.builder.shuffle_vector(single, single, ir.Constant(_INT_VECTOR, None))

    def add(self, a, b):
        return self.builder.fadd(a, b, flags=FAST)

    def sub(self, a, b):
        return self.builder.fsub(a, b, flags=FAST)

    def mul(self, a, b):
        return self.builder.fmul(a, b, flags=FAST)

    def fma(self, a, b, c):
        """a b + c (LLVM fuses it: "contract")."""
        return self.add(self.mul(a, b), c)

    def sum_lanes(self, vector):
        """The sum of a vector's lanes: halves added until one lane is left."""
        width = VECTOR
        while width > 1:
            width //= 2
            low, high = (ir.Constant(_INT_VECTOR, [first + i if i < width else 0 for i in range(VECTOR)])
                         for first in (0, width))
            vector = self.add(self.builder.shuffle_vector(vector, vector, low),
                              self.builder.shuffle_vector(vector, vector, high))
        return self.builder.extract_element(vector, ir.Constant(_INDEX, 0))

    def accumulator(self, initial=None):
        """A vector to sum into, `initial` or zeros (an alloca that LLVM keeps in a register)."""
        return cgutils.alloca_once_value(self.builder, ir.Constant(_FLOAT_VECTOR, None) if initial is None else initial)

    def accumulate(self, accumulator, value) -> None:
        self.builder.store(self.add(self.builder.load(accumulator), value), accumulator)

    def exp2(self, x, constants: list):
        """2 ** x as _numba_kernels.exp2_with computes it for float32, with `constants` (its range and coefficients,
        broadcast): min(max(x, lowest), highest) in Numba's way (a NaN stays NaN), the polynomial of the fraction
        and the whole part added to the exponent field."""
        lowest, highest, *coefficients = constants
        x = self.builder.select(self.builder.fcmp_ordered(">", lowest, x), lowest, x)
        x = self.builder.select(self.builder.fcmp_ordered("<", highest, x), highest, x)
        floor = cgutils.get_or_insert_function(self.builder.module, ir.FunctionType(_FLOAT_VECTOR, [_FLOAT_VECTOR]),
                                               "llvm.floor.v16f32")
        whole = self.builder.call(floor, [self.add(x, self.broadcast(ir.Constant(ir.FloatType(), 0.5)))])
        fraction = self.sub(x, whole)
        power = coefficients[-1]
        for coefficient in reversed(coefficients[:-1]):
            power = self.fma(fraction, power, coefficient)
        exponent = self.builder.shl(self.builder.fptosi(whole, _INT_VECTOR),
                                    ir.Constant(_INT_VECTOR, [MANTISSA_BITS] * VECTOR))
        bits = self.builder.add(exponent, self.builder.bitcast(power, _INT_VECTOR))
        return self.builder.bitcast(bits, _FLOAT_VECTOR)


def _vector_arrays(arrays, lanes) -> bool:
    """Whether an intrinsic's arguments allow vector code: float32 C-contiguous arrays (or None where optional) and
    a literal lane count that is a multiple of VECTOR."""
    return (isinstance(lanes, types.IntegerLiteral) and lanes.literal_value % VECTOR == 0
            and all(isinstance(a, types.NoneType) or (isinstance(a, types.Array) and a.dtype == types.float32
                                                       and a.layout == "C") for a in arrays))


class _Recurrence:
    """The positions of `recurrence_step_vectors`' arguments."""
    (DELTAS, DELTA_US, B_T, C_T, A, H_BEFORE, H_AFTER, DECAYS, YS, CONSTANTS) = range(10)


@intrinsic(prefer_literal=True)
def recurrence_step_vectors(typingctx, deltas, delta_us, B_t, C_t, A, h_before, h_after, decays, ys, exp2_constants,
                            lanes):
    """`_numba_kernels.recurrence_step` for float32 arrays and a literal `lanes` that is a multiple of VECTOR."""
    arrays = (deltas, delta_us, B_t, C_t, A, h_before, h_after, decays, ys)
    if not _vector_arrays(arrays, lanes) or exp2_constants != types.UniTuple(types.float32, 9):
        return None

    def codegen(context, builder, signature, args):
        code = _VectorCode(context, builder, signature, args, lanes.literal_value)
        step_deltas = code.load_row(_Recurrence.DELTAS)
        step_delta_us = code.load_row(_Recurrence.DELTA_US) if code.present(_Recurrence.DELTA_US) else None
        constants = [code.broadcast(builder.extract_value(args[_Recurrence.CONSTANTS], i)) for i in range(9)]
        outputs = ([code.accumulator(y) for y in code.load_row(_Recurrence.YS)] if code.present(_Recurrence.YS)
                   else None)
        with cgutils.for_range(builder, code.shapes[_Recurrence.B_T][0]) as loop:
            k = loop.index
            B_k = code.broadcast(code.load_scalar(_Recurrence.B_T, k))
            C_k = code.broadcast(code.load_scalar(_Recurrence.C_T, k)) if outputs else None
            for v in range(len(step_deltas)):
                at = code.offset(v, k)
                decay = code.exp2(code.mul(step_deltas[v], code.load(_Recurrence.A, at)), constants)
                if code.present(_Recurrence.DECAYS):
                    code.store(decay, _Recurrence.DECAYS, at)
                source = code.mul(step_delta_us[v], B_k) if step_delta_us else B_k
                h = code.add(code.mul(decay, code.load(_Recurrence.H_BEFORE, at)), source)
                code.store(h, _Recurrence.H_AFTER, at)
                if outputs:
                    code.accumulate(outputs[v], code.mul(h, C_k))
        if outputs:
            for v, output in enumerate(outputs):
                code.store(builder.load(output), _Recurrence.YS, code.offset(v))
        return context.get_dummy_value()
    return types.void(*arrays, exp2_constants, lanes), codegen


class _Adjoint:
    """The positions of `adjoint_step_vectors`' arguments."""
    (DYS, DELTA_US, DELTAS, B_T, C_T, DECAYS, STATES, A, CARRY, DA, DB_T, D_DELTA_US, D_EXPONENTS) = range(13)


@intrinsic(prefer_literal=True)
def adjoint_step_vectors(typingctx, dys, delta_us, deltas, B_t, C_t, decays, states, A, carry, dA, dB_t,
                         d_delta_us, d_exponents, lanes):
    """`_numba_kernels.adjoint_step` for float32 arrays and a literal `lanes` that is a multiple of VECTOR."""
    arrays = (dys, delta_us, deltas, B_t, C_t, decays, states, A, carry, dA, dB_t, d_delta_us, d_exponents)
    if not _vector_arrays(arrays, lanes) or any(isinstance(a, types.NoneType) for a in arrays):
        return None

    def codegen(context, builder, signature, args):
        code = _VectorCode(context, builder, signature, args, lanes.literal_value)
        step_dys, step_delta_us, step_deltas = (code.load_row(name)
                                                for name in (_Adjoint.DYS, _Adjoint.DELTA_US, _Adjoint.DELTAS))
        d_delta_us, d_exponents = ([code.accumulator() for _ in step_dys] for _ in range(2))
        with cgutils.for_range(builder, code.shapes[_Adjoint.B_T][0]) as loop:
            k = loop.index
            B_k, C_k = (code.broadcast(code.load_scalar(name, k)) for name in (_Adjoint.B_T, _Adjoint.C_T))
            total = None
            for v in range(len(step_dys)):
                at = code.offset(v, k)
                decay = code.load(_Adjoint.DECAYS, at)
                g = code.fma(step_dys[v], C_k, code.load(_Adjoint.CARRY, at))
                code.store(code.mul(decay, g), _Adjoint.CARRY, at)
                product = code.mul(g, step_delta_us[v])
                total = product if total is None else code.add(total, product)
                code.accumulate(d_delta_us[v], code.mul(g, B_k))
                through_decay = code.mul(code.mul(g, decay), code.load(_Adjoint.STATES, at))
                code.accumulate(d_exponents[v], code.mul(through_decay, code.load(_Adjoint.A, at)))
                code.store(code.fma(through_decay, step_deltas[v], code.load(_Adjoint.DA, at)), _Adjoint.DA, at)
            code.store_scalar(builder.fadd(code.load_scalar(_Adjoint.DB_T, k), code.sum_lanes(total), flags=FAST),
                              _Adjoint.DB_T, k)
        for name, sums in ((_Adjoint.D_DELTA_US, d_delta_us), (_Adjoint.D_EXPONENTS, d_exponents)):
            for v, accumulated in enumerate(sums):
                code.store(builder.load(accumulated), name, code.offset(v))
        return context.get_dummy_value()
    return types.void(*arrays, lanes), codegen


def _transposed(code: _VectorCode, vectors: list) -> list:
    """The columns of the VECTOR x VECTOR matrix whose rows are `vectors`: for each bit of the row and column
    indices, the elements whose bits differ swapped between pairs of rows (one shuffle of two vectors per row and
    bit: 64 for a 16 x 16 tile)."""
    vectors = list(vectors)
    bit = VECTOR // 2
    while bit:
        low = [c if not c & bit else VECTOR + (c ^ bit) for c in range(VECTOR)]
        high = [c ^ bit if not c & bit else VECTOR + c for c in range(VECTOR)]
        for r in range(VECTOR):
            if not r & bit:
                first, second = vectors[r], vectors[r | bit]
                vectors[r] = code.builder.shuffle_vector(first, second, ir.Constant(_INT_VECTOR, low))
                vectors[r | bit] = code.builder.shuffle_vector(first, second, ir.Constant(_INT_VECTOR, high))
        bit //= 2
    return vectors


@intrinsic(prefer_literal=True)
def transpose_tile_vectors(typingctx, source, source_row, source_column, target, target_row, target_column,
                           reversed_rows):
    """target[target_row + c, target_column + r] = source[source_row + r, source_column + c] for r, c in
    0 .. VECTOR - 1 (target row target_row + VECTOR - 1 - c instead where `reversed_rows`), both float32 C-contiguous
    2-D arrays: a tile read a row (a cache line) at a time and transposed in registers."""
    if (not isinstance(reversed_rows, types.BooleanLiteral) or not _vector_arrays((source, target), types.literal(
            VECTOR)) or source.ndim != 2 or target.ndim != 2):
        return None

    def codegen(context, builder, signature, args):
        code = _VectorCode(context, builder, signature, args, VECTOR)
        source_rows, target_rows = code.shapes[0][1], code.shapes[3][1]

        def at(row, column, row_length):
            return builder.add(builder.mul(row, row_length), column)
        rows = [code.load(0, at(builder.add(args[1], ir.Constant(_INDEX, r)), args[2], source_rows))
                for r in range(VECTOR)]
        for c, column in enumerate(_transposed(code, rows)):
            row = VECTOR - 1 - c if reversed_rows.literal_value else c
            code.store(column, 3, at(builder.add(args[4], ir.Constant(_INDEX, row)), args[5], target_rows))
        return context.get_dummy_value()
    return types.void(source, source_row, source_column, target, target_row, target_column, reversed_rows), codegen
