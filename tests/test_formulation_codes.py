"""The formulation codes: one table (meprop.kernels.FORMULATIONS, index = code) that the C++ enum
(csrc/common.h) follows, and the ops' one name/code table (kOpFormulations, csrc/common.h) agrees with."""

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


def test_the_kernel_codes_are_the_table_and_the_ops_name_them_alike():
    assert dispatch.KERNEL_CODES == {"auto": -1, "gather": 0, "masked_gemm": 1, "masked_dense": 5}
    for name, code in dispatch.KERNEL_CODES.items():
        assert code == -1 or kernels.FORMULATIONS[code] == name
    table = re.search(r"kOpFormulations\[\] = \{(.*?)\};", (CSRC / "common.h").read_text(), re.S).group(1)
    names = dict(re.findall(r'\{"(\w+)", (k\w+|-1)\}', table))
    assert names == {"auto": "-1", **{n: _camel(n) for n in dispatch.KERNEL_CODES if n != "auto"}}


def test_the_ops_take_their_formulations_from_the_one_table_only():
    """Each op reads a formulation through the common helpers: no name or code spelled out again."""
    for source in ("linear_backward.cpp", "sample.cpp"):
        text = (CSRC / source).read_text()
        assert "formulation_code(op, formulation)" in text
        assert not re.search(r'formulation == "|case k\w+: return "', text), source
    assert 'check_formulation_code("meprop::linear", formulation)' in (CSRC / "linear_backward.cpp").read_text()
