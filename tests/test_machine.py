"""What machine a figure was measured on, as every tool writes it beside its figures."""
from __future__ import annotations

import os

from fer_pipe.machine import cpu_model

BLOCK = """processor\t: {n}
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: {model}
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 {extra}

"""


def test_two_cpus_of_one_name_are_told_apart_by_model_and_vector_unit(tmp_path):
    """Two "AMD EPYC, 2 cores" machines ran the shipped int8 model at 1,068 and about 240 faces
    a second: the one had AVX-512 VNNI, the other AVX2 alone (s61a 2)."""
    wide, narrow = tmp_path / "wide", tmp_path / "narrow"
    wide.write_text("".join(BLOCK.format(n=n, model=17, extra="avx512f avx512_vnni") for n in range(2)))
    narrow.write_text("".join(BLOCK.format(n=n, model=1, extra="") for n in range(2)))
    cores = os.cpu_count()
    assert cpu_model(str(wide)) == f"AMD EPYC (family 25, model 17), {cores} cores, AVX-512 VNNI"
    assert cpu_model(str(narrow)) == f"AMD EPYC (family 25, model 1), {cores} cores, AVX2"
