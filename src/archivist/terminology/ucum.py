"""Validity of UCUM unit expressions (the case-sensitive form DICOM uses, PS3.16 Section 8.1).

UCUM is a grammar, not a list: PS3.16 lists only the few dozen units its context groups name,
while Measurement Units Code Sequence (CID 82) takes any valid UCUM expression (``mg/dL``,
``10*3/uL``, ``{ratio}``, ``kg/m2``). :func:`ucum_error` parses an expression by the grammar
of the UCUM specification (Section 2, "Syntax Rules"): terms joined by ``.`` and ``/``,
parentheses, a leading ``/``, integer exponents, factors, ``{annotations}``, and unit atoms
with a prefix for metric units only. Case matters (``MM3`` is not ``mm3``, ``m`` is metre and
``M`` only a prefix).

The atom and prefix symbols are those of UCUM version 2.2 (``ucum-essence.xml``, revision date
2024-06-17; UCUM is copyright Regenstrief Institute, Inc., and used under the UCUM license).
Which units are special (Celsius, pH, bel) and what they measure is not checked; an
annotation is also taken after a parenthesis or a factor, as UCUM's own examples write them
(``g/(8.h){shift}``).
"""

from __future__ import annotations

__all__ = [
    "METRIC_ATOMS",
    "OTHER_ATOMS",
    "PREFIXES",
    "is_valid_ucum",
    "ucum_error",
    "unlisted_unit_note",
]

#: Prefixes (UCUM Table 1), for metric units only.
PREFIXES: frozenset[str] = frozenset({
    "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "da", "d", "c", "m", "u", "n", "p", "f", "a",
    "z", "y", "Ki", "Mi", "Gi", "Ti",
})

#: Base units and the metric units, which take a prefix (``mm``, ``kBq``, ``mL``).
METRIC_ATOMS: frozenset[str] = frozenset({
    "m", "s", "g", "rad", "K", "C", "cd", "mol", "sr", "Hz", "N", "Pa", "J", "W", "A", "V",
    "F", "Ohm", "S", "Wb", "Cel", "T", "H", "lm", "lx", "Bq", "Gy", "Sv", "l", "L", "ar", "t",
    "bar", "u", "eV", "pc", "[c]", "[h]", "[k]", "[eps_0]", "[mu_0]", "[e]", "[m_e]", "[m_p]",
    "[G]", "[g]", "[ly]", "gf", "Ky", "Gal", "dyn", "erg", "P", "Bi", "St", "Mx", "G", "Oe",
    "Gb", "sb", "Lmb", "ph", "Ci", "R", "RAD", "REM", "cal_[15]", "cal_[20]", "cal_m",
    "cal_IT", "cal_th", "cal", "tex", "m[H2O]", "m[Hg]", "eq", "osm", "g%", "kat", "U", "[iU]",
    "[IU]", "Np", "B", "B[SPL]", "B[V]", "B[mV]", "B[uV]", "B[10.nV]", "B[W]", "B[kW]", "st",
    "mho", "bit", "By", "Bd",
})

#: The units that take no prefix (``min``, ``%``, ``[in_i]``, ``10*``).
OTHER_ATOMS: frozenset[str] = frozenset({
    "10*", "10^", "[pi]", "%", "[ppth]", "[ppm]", "[ppb]", "[pptr]", "gon", "deg", "'", "''",
    "min", "h", "d", "a_t", "a_j", "a_g", "a", "wk", "mo_s", "mo_j", "mo_g", "mo", "AU", "atm",
    "[lbf_av]", "[in_i]", "[ft_i]", "[yd_i]", "[mi_i]", "[fth_i]", "[nmi_i]", "[kn_i]",
    "[sin_i]", "[sft_i]", "[syd_i]", "[cin_i]", "[cft_i]", "[cyd_i]", "[bf_i]", "[cr_i]",
    "[mil_i]", "[cml_i]", "[hd_i]", "[ft_us]", "[yd_us]", "[in_us]", "[rd_us]", "[ch_us]",
    "[lk_us]", "[rch_us]", "[rlk_us]", "[fth_us]", "[fur_us]", "[mi_us]", "[acr_us]",
    "[srd_us]", "[smi_us]", "[sct]", "[twp]", "[mil_us]", "[in_br]", "[ft_br]", "[rd_br]",
    "[ch_br]", "[lk_br]", "[fth_br]", "[pc_br]", "[yd_br]", "[mi_br]", "[nmi_br]", "[kn_br]",
    "[acr_br]", "[gal_us]", "[bbl_us]", "[qt_us]", "[pt_us]", "[gil_us]", "[foz_us]",
    "[fdr_us]", "[min_us]", "[crd_us]", "[bu_us]", "[gal_wi]", "[pk_us]", "[dqt_us]",
    "[dpt_us]", "[tbs_us]", "[tsp_us]", "[cup_us]", "[foz_m]", "[cup_m]", "[tsp_m]", "[tbs_m]",
    "[gal_br]", "[pk_br]", "[bu_br]", "[qt_br]", "[pt_br]", "[gil_br]", "[foz_br]", "[fdr_br]",
    "[min_br]", "[gr]", "[lb_av]", "[oz_av]", "[dr_av]", "[scwt_av]", "[lcwt_av]", "[ston_av]",
    "[lton_av]", "[stone_av]", "[pwt_tr]", "[oz_tr]", "[lb_tr]", "[sc_ap]", "[dr_ap]",
    "[oz_ap]", "[lb_ap]", "[oz_m]", "[lne]", "[pnt]", "[pca]", "[pnt_pr]", "[pca_pr]",
    "[pied]", "[pouce]", "[ligne]", "[didot]", "[cicero]", "[degF]", "[degR]", "[degRe]",
    "[Cal]", "[Btu_39]", "[Btu_59]", "[Btu_60]", "[Btu_m]", "[Btu_IT]", "[Btu_th]", "[Btu]",
    "[HP]", "[den]", "[in_i'H2O]", "[in_i'Hg]", "[PRU]", "[wood'U]", "[diop]", "[p'diop]",
    "%[slope]", "[mesh_i]", "[Ch]", "[drp]", "[hnsf'U]", "[MET]", "[hp'_X]", "[hp'_C]",
    "[hp'_M]", "[hp'_Q]", "[hp_X]", "[hp_C]", "[hp_M]", "[hp_Q]", "[kp_X]", "[kp_C]", "[kp_M]",
    "[kp_Q]", "[pH]", "[S]", "[HPF]", "[LPF]", "[arb'U]", "[USP'U]", "[GPL'U]", "[MPL'U]",
    "[APL'U]", "[beth'U]", "[anti'Xa'U]", "[todd'U]", "[dye'U]", "[smgy'U]", "[bdsk'U]",
    "[ka'U]", "[knk'U]", "[mclg'U]", "[tb'U]", "[CCID_50]", "[TCID_50]", "[EID_50]", "[PFU]",
    "[FFU]", "[CFU]", "[IR]", "[BAU]", "[AU]", "[Amb'a'1'U]", "[PNU]", "[Lf]", "[D'ag'U]",
    "[FEU]", "[ELU]", "[EU]", "Ao", "b", "att", "[psi]", "circ", "sph", "[car_m]", "[car_Au]",
    "[smoot]", "[m/s2/Hz^(1/2)]", "[NTU]", "[FNU]", "bit_s",
})

_ATOMS = METRIC_ATOMS | OTHER_ATOMS
#: Longest prefixes first, so that ``da`` is tried before ``d``.
_PREFIX_ORDER = sorted(PREFIXES, key=len, reverse=True)
#: Characters allowed in an annotation and inside square brackets (UCUM 2.1 §3-§4): printable
#: ASCII without the curly braces.
_PRINTABLE = frozenset(chr(c) for c in range(33, 127)) - {"{", "}"}
#: Expressions longer than this are refused without parsing (a Code Value is at most 16
#: characters, a Long Code Value at most 1024).
MAX_LENGTH = 1024


class _Invalid(Exception):
    pass


def is_valid_ucum(expression: str) -> bool:
    """Whether `expression` is a valid case-sensitive UCUM unit expression."""
    return ucum_error(expression) is None


def ucum_error(expression: str) -> str | None:
    """Why `expression` is not a valid case-sensitive UCUM expression, or None when it is.

    Parameters
    ----------
    expression : str
        A Code Value of the coding scheme ``UCUM`` (``mm2``, ``mg/dL``, ``{ratio}``).

    Returns
    -------
    str or None
        A short reason (``unknown unit 'MM'``), or None for a valid expression.
    """
    if not expression:
        return "the expression is empty"
    if len(expression) > MAX_LENGTH:
        return f"the expression is longer than {MAX_LENGTH} characters"
    parser = _Parser(expression)
    try:
        parser.main_term()
    except _Invalid as exc:
        return str(exc)
    return None


def unlisted_unit_note(expression: str) -> str:
    """What to tell someone who looked up a UCUM code PS3.16 does not list."""
    problem = ucum_error(expression)
    if problem is None:
        return "it is a valid UCUM unit, which PS3.16 need not list (CID 82 takes any)"
    return f"it is not a valid UCUM unit either: {problem}"


class _Parser:
    """A recursive-descent parser of UCUM's grammar (main-term, term, component)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, reason: str) -> _Invalid:
        return _Invalid(f"{reason} (at character {self.pos + 1})")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def main_term(self) -> None:
        if self.peek() == "/":
            self.pos += 1
        self.term()
        if self.pos < len(self.text):
            raise self.fail(f"unexpected {self.peek()!r}")

    def term(self) -> None:
        self.component()
        while self.peek() in (".", "/") and self.peek():
            self.pos += 1
            self.component()

    def component(self) -> None:
        char = self.peek()
        if not char:
            raise self.fail("a unit is missing")
        if char == "(":
            self.pos += 1
            self.term()
            if self.peek() != ")":
                raise self.fail("')' is missing")
            self.pos += 1
            if self.peek() == "{":
                # Not in the BNF, but in UCUM's own examples: g/(8.h){shift}.
                self.annotation()
            return
        if char == "{":
            self.annotation()
            return
        start = self.pos
        symbol = self.symbol()
        if not symbol:
            raise self.fail(f"unexpected {char!r}")
        if symbol.isdigit():
            # A factor (a positive integer), which takes no exponent.
            if self.peek() == "{":
                self.annotation()
            return
        unit, exponent = _split_exponent(symbol)
        if not _is_simple_unit(unit):
            self.pos = start
            raise self.fail(f"unknown unit {unit!r}")
        if exponent and exponent.lstrip("+-") == "":
            raise self.fail("an exponent is missing its digits")
        if self.peek() == "{":
            self.annotation()

    def symbol(self) -> str:
        """The characters of an atom with its prefix and exponent: up to an operator, a
        parenthesis or an annotation outside square brackets."""
        start = self.pos
        depth = 0
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "[":
                depth += 1
            elif char == "]":
                if depth == 0:
                    raise self.fail("']' without '['")
                depth -= 1
            elif depth == 0 and char in "./(){}":
                break
            if char not in _PRINTABLE:
                raise self.fail(f"{char!r} is not allowed (printable ASCII, no spaces)")
            self.pos += 1
        if depth:
            raise self.fail("']' is missing")
        return text[start : self.pos]

    def annotation(self) -> None:
        end = self.text.find("}", self.pos + 1)
        if end < 0:
            raise self.fail("'}' is missing")
        body = self.text[self.pos + 1 : end]
        bad = next((c for c in body if c not in _PRINTABLE), None)
        if bad is not None:
            raise self.fail(f"{bad!r} is not allowed in an annotation")
        self.pos = end + 1


def _split_exponent(symbol: str) -> tuple[str, str]:
    """``mm2`` -> (``mm``, ``2``), ``10*-3`` -> (``10*``, ``-3``); no atom ends in a digit."""
    end = len(symbol)
    while end > 0 and symbol[end - 1].isdigit():
        end -= 1
    if end > 0 and symbol[end - 1] in "+-":
        end -= 1
    if end == 0:
        return symbol, ""
    return symbol[:end], symbol[end:]


def _is_simple_unit(unit: str) -> bool:
    if unit in _ATOMS:
        return True
    return any(
        unit.startswith(prefix) and unit[len(prefix):] in METRIC_ATOMS
        for prefix in _PREFIX_ORDER
    )
