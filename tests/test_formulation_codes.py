"""The formulation codes: one table (meprop.kernels.FORMULATIONS, index = code) that the C++ enum
(csrc/common.h) follows and the compiled op's name switch (csrc/linear_backward.cpp) agrees with."""

from __future__ import annotations

import re
from pathlib import Path

from meprop import dispatch, kernels

CSRC = Path(kernels.__file__).resolve().parent / "csrc"


def _camel(name: str) -> str:
    return "k" + "".join(part.capitalize() for part in name.split("_"))  # masked_gemm -> kMaskedGemm


def test_the_cpp_enum_follows_the_python_table():
    enum = re.search(r"enum Formulation : int64_t \{(.*?)\};", (CSRC / "common.h").read_text(), re.S).group(1)
    codes = {name: int(value) for name, value in re.findall(r"(k\w+) = (\d+)", enum)}
    assert codes.pop("kNumFormulations") == len(kernels.FORMULATIONS)
    assert codes == {_camel(name): code for code, name in enumerate(kernels.FORMULATIONS)}


def test_the_kernel_codes_are_the_table_and_the_op_names_them_alike():
    assert dispatch.KERNEL_CODES == {"auto": -1, "gather": 0, "masked_gemm": 1, "masked_dense": 5}
    for name, code in dispatch.KERNEL_CODES.items():
        assert code == -1 or kernels.FORMULATIONS[code] == name
    source = (CSRC / "linear_backward.cpp").read_text()
    names = dict(re.findall(r"case (k\w+|-1): return \"(\w+)\";", source))
    assert names == {"-1": "auto", **{_camel(n): n for n in dispatch.KERNEL_CODES if n != "auto"}}
    for name in dispatch.KERNEL_CODES:  # the op's string argument accepts exactly these
        assert f'formulation == "{name}"' in source
