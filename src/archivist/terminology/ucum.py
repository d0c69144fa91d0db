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

:func:`unit_name` reads a valid expression in words (``mg/dL`` -> "milligram per deciliter"),
from the names of the prefixes and atoms in UCUM's ``ucum-essence.xml`` as English writes them;
:func:`parse_unit_name` reads such words back (``milligrams per decilitre`` -> ``mg/dL``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from archivist.terminology.text import STOP_WORDS, american_spelling, inflections

__all__ = [
    "ATOM_NAMES",
    "METRIC_ATOMS",
    "OTHER_ATOMS",
    "PREFIXES",
    "PREFIX_NAMES",
    "UNLISTED_NOTE",
    "is_valid_ucum",
    "parse_unit_name",
    "ucum_error",
    "unit_name",
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

#: The names of the prefixes (UCUM Table 1).
PREFIX_NAMES: dict[str, str] = {
    "Y": "yotta", "Z": "zetta", "E": "exa", "P": "peta", "T": "tera", "G": "giga", "M": "mega",
    "k": "kilo", "h": "hecto", "da": "deka", "d": "deci", "c": "centi", "m": "milli",
    "u": "micro", "n": "nano", "p": "pico", "f": "femto", "a": "atto", "z": "zepto",
    "y": "yocto", "Ki": "kibi", "Mi": "mebi", "Gi": "gibi", "Ti": "tebi",
}

#: The names of the atoms, as UCUM's names (``ucum-essence.xml``) read in English, singular and
#: in American spelling as UCUM writes them: every base and metric atom, and the other atoms in
#: common use. An atom without a name here is read as its symbol.
ATOM_NAMES: dict[str, str] = {
    # Base units
    "m": "meter", "s": "second", "g": "gram", "rad": "radian", "K": "kelvin", "C": "coulomb",
    "cd": "candela",
    # Dimensionless units
    "10*": "ten", "10^": "ten", "[pi]": "pi", "%": "percent", "[ppth]": "parts per thousand",
    "[ppm]": "parts per million", "[ppb]": "parts per billion",
    "[pptr]": "parts per trillion",
    # SI units
    "mol": "mole", "sr": "steradian", "Hz": "hertz", "N": "newton", "Pa": "pascal",
    "J": "joule", "W": "watt", "A": "ampere", "V": "volt", "F": "farad", "Ohm": "ohm",
    "S": "siemens", "Wb": "weber", "Cel": "degree Celsius", "T": "tesla", "H": "henry",
    "lm": "lumen", "lx": "lux", "Bq": "becquerel", "Gy": "gray", "Sv": "sievert",
    # Other units from ISO 1000, ISO 2955 and ANSI X3.50
    "gon": "gon", "deg": "degree", "'": "minute of arc", "''": "second of arc",
    "l": "liter", "L": "liter", "ar": "are", "min": "minute", "h": "hour", "d": "day",
    "a_t": "tropical year", "a_j": "mean Julian year", "a_g": "mean Gregorian year",
    "a": "year", "wk": "week", "mo_s": "synodal month", "mo_j": "mean Julian month",
    "mo_g": "mean Gregorian month", "mo": "month", "t": "tonne", "bar": "bar",
    "u": "unified atomic mass unit", "eV": "electronvolt", "AU": "astronomic unit",
    "pc": "parsec",
    # Natural units
    "[c]": "velocity of light", "[h]": "Planck constant", "[k]": "Boltzmann constant",
    "[eps_0]": "permittivity of vacuum", "[mu_0]": "permeability of vacuum",
    "[e]": "elementary charge", "[m_e]": "electron mass", "[m_p]": "proton mass",
    "[G]": "Newtonian constant of gravitation",
    "[g]": "standard acceleration of free fall", "atm": "standard atmosphere",
    "[ly]": "light-year", "gf": "gram-force", "[lbf_av]": "pound force",
    # CGS units
    "Ky": "kayser", "Gal": "gal", "dyn": "dyne", "erg": "erg", "P": "poise", "Bi": "biot",
    "St": "stokes", "Mx": "maxwell", "G": "gauss", "Oe": "oersted", "Gb": "gilbert",
    "sb": "stilb", "Lmb": "lambert", "ph": "phot", "Ci": "curie", "R": "roentgen",
    "RAD": "radiation absorbed dose", "REM": "radiation equivalent man",
    # Customary units: international, US and British
    "[in_i]": "inch", "[ft_i]": "foot", "[yd_i]": "yard", "[mi_i]": "mile",
    "[fth_i]": "fathom", "[nmi_i]": "nautical mile", "[kn_i]": "knot",
    "[sin_i]": "square inch", "[sft_i]": "square foot", "[syd_i]": "square yard",
    "[cin_i]": "cubic inch", "[cft_i]": "cubic foot", "[cyd_i]": "cubic yard",
    "[mil_i]": "mil", "[acr_us]": "acre", "[gal_us]": "US gallon",
    "[bbl_us]": "barrel", "[qt_us]": "US quart", "[pt_us]": "US pint",
    "[gil_us]": "US gill", "[foz_us]": "US fluid ounce", "[tbs_us]": "tablespoon",
    "[tsp_us]": "teaspoon", "[cup_us]": "cup", "[foz_m]": "metric fluid ounce",
    "[cup_m]": "metric cup", "[tsp_m]": "metric teaspoon", "[tbs_m]": "metric tablespoon",
    "[gal_br]": "British gallon", "[qt_br]": "British quart", "[pt_br]": "British pint",
    "[foz_br]": "British fluid ounce", "[gr]": "grain", "[lb_av]": "pound",
    "[oz_av]": "ounce", "[dr_av]": "dram", "[ston_av]": "short ton", "[lton_av]": "long ton",
    "[stone_av]": "stone", "[oz_tr]": "troy ounce", "[lb_tr]": "troy pound",
    "[oz_ap]": "apothecary ounce", "[dr_ap]": "apothecary dram", "[sc_ap]": "scruple",
    # Heat, clinical medicine, chemistry and biochemistry
    "[degF]": "degree Fahrenheit", "[degR]": "degree Rankine", "[degRe]": "degree Reaumur",
    "cal_[15]": "calorie at 15 degrees Celsius", "cal_[20]": "calorie at 20 degrees Celsius",
    "cal_m": "mean calorie", "cal_IT": "international table calorie",
    "cal_th": "thermochemical calorie", "cal": "calorie", "[Cal]": "nutrition label Calorie",
    "[Btu]": "British thermal unit", "[HP]": "horsepower", "tex": "tex", "[den]": "denier",
    "m[H2O]": "meter of water", "m[Hg]": "meter of mercury",
    "[in_i'H2O]": "inch of water", "[in_i'Hg]": "inch of mercury",
    "[PRU]": "peripheral vascular resistance unit", "[wood'U]": "Wood unit",
    "[diop]": "diopter", "[p'diop]": "prism diopter", "%[slope]": "percent of slope",
    "[mesh_i]": "mesh", "[Ch]": "French", "[drp]": "drop", "[hnsf'U]": "Hounsfield unit",
    "[MET]": "metabolic equivalent", "eq": "equivalent", "osm": "osmole", "[pH]": "pH",
    "g%": "gram percent", "[S]": "Svedberg unit", "[HPF]": "high power field",
    "[LPF]": "low power field", "kat": "katal", "U": "unit", "[iU]": "international unit",
    "[IU]": "international unit", "[arb'U]": "arbitrary unit",
    "[USP'U]": "United States Pharmacopeia unit", "[GPL'U]": "GPL unit",
    "[MPL'U]": "MPL unit", "[APL'U]": "APL unit", "[beth'U]": "Bethesda unit",
    "[anti'Xa'U]": "anti factor Xa unit", "[todd'U]": "Todd unit", "[dye'U]": "Dye unit",
    "[smgy'U]": "Somogyi unit", "[bdsk'U]": "Bodansky unit", "[ka'U]": "King-Armstrong unit",
    "[knk'U]": "Kunkel unit", "[mclg'U]": "Mac Lagan unit", "[tb'U]": "tuberculin unit",
    "[CCID_50]": "50% cell culture infectious dose",
    "[TCID_50]": "50% tissue culture infectious dose",
    "[EID_50]": "50% embryo infectious dose", "[PFU]": "plaque forming unit",
    "[FFU]": "focus forming unit", "[CFU]": "colony forming unit",
    "[IR]": "index of reactivity", "[BAU]": "bioequivalent allergen unit",
    "[AU]": "allergen unit", "[Amb'a'1'U]": "allergen unit for Ambrosia artemisiifolia",
    "[PNU]": "protein nitrogen unit", "[Lf]": "limit of flocculation",
    "[D'ag'U]": "D-antigen unit", "[FEU]": "fibrinogen equivalent unit",
    "[ELU]": "ELISA unit", "[EU]": "Ehrlich unit", "[NTU]": "nephelometric turbidity unit",
    "[FNU]": "formazin nephelometric unit",
    # Levels, other units and units of information
    "Np": "neper", "B": "bel", "B[SPL]": "bel sound pressure", "B[V]": "bel volt",
    "B[mV]": "bel millivolt", "B[uV]": "bel microvolt", "B[10.nV]": "bel 10 nanovolt",
    "B[W]": "bel watt", "B[kW]": "bel kilowatt", "st": "stere", "Ao": "angstrom",
    "b": "barn", "att": "technical atmosphere", "mho": "mho", "[psi]": "pound per square inch",
    "circ": "circle", "sph": "sphere", "[car_m]": "metric carat", "[car_Au]": "carat of gold",
    "[smoot]": "smoot", "bit": "bit", "By": "byte", "Bd": "baud",
}

#: The note given with a UCUM unit PS3.16 does not list, when it is shown or found.
UNLISTED_NOTE = "a valid UCUM unit that PS3.16 does not list (CID 82 takes any valid UCUM unit)"


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


def unit_name(expression: str) -> str:
    """The name of a valid UCUM expression in words, from UCUM's names of its prefixes and atoms.

    Products are read in order, divisions as "per" (``mL/min/{1.73_m2}`` -> "milliliter per
    minute per 1.73 m2"), exponents 2 and 3 as "square" and "cubic", others as "to the power
    n", a negative exponent as a division (``cm-1`` -> "per centimeter"), powers of ten in words
    (``10*3/uL`` -> "thousand per microliter"), an annotation alone as its text (``{beats}/min``
    -> "beats per minute") and one after a unit in braces. An atom without a name in
    :data:`ATOM_NAMES` is read as its symbol.

    Parameters
    ----------
    expression : str
        A valid case-sensitive UCUM expression (``mg/dL``, ``kg/m2``, ``mm[Hg]``).

    Returns
    -------
    str
        Its name, such as "milligram per deciliter".

    Raises
    ------
    ValueError
        When `expression` is not a valid UCUM expression (:func:`ucum_error` says why).
    """
    problem = ucum_error(expression)
    if problem is not None:
        raise ValueError(f"{expression!r} is not a valid UCUM unit: {problem}")
    return _term_name(_Parser(expression).main_term())


def _term_name(term: list[tuple[str, _Component]]) -> str:
    over: list[str] = []
    under: list[str] = []
    _gather(term, False, over, under)
    if over == ["1"] and under:
        over = []  # 1/min: per minute
    text = " ".join(over)
    for name in under:
        text = f"{text} per {name}" if text else f"per {name}"
    return text


def _gather(term: list[tuple[str, _Component]], inverted: bool, over: list[str],
            under: list[str]) -> None:
    """The names of a term's components, sorted into those multiplied (`over`) and those
    divided by (`under`): a/(b.c) is a/b/c, a/b.c is a.c/b."""
    for operator, component in term:
        below = (operator == "/") != inverted
        if isinstance(component, _Group) and component.annotation is None:
            _gather(component.term, below, over, under)
            continue
        if isinstance(component, _Group):
            name = f"({_term_name(component.term)}) {{{component.annotation}}}"
        elif isinstance(component, _Factor):
            text = (component.annotation or "").replace("_", " ").strip()
            name = " ".join(part for part in (component.digits, text) if part)
            name = name or f"{{{component.annotation}}}"
        else:
            exponent = component.exponent
            if exponent is not None and exponent < 0 and component.atom not in _POWERS:
                below, exponent = not below, -exponent
            name = _unit_words(component, exponent)
        (under if below else over).append(name)


#: The atoms of powers of ten, and the powers read as words.
_POWERS = ("10*", "10^")
_POWER_WORDS = {2: "hundred", 3: "thousand", 6: "million", 9: "billion", 12: "trillion"}


def _unit_words(unit: _Unit, exponent: int | None) -> str:
    if unit.atom in _POWERS:
        name = "ten" if exponent is None else _POWER_WORDS.get(exponent, f"10^{exponent}")
    else:
        atom = ATOM_NAMES.get(unit.atom)
        name = PREFIX_NAMES.get(unit.prefix, "") + atom if atom else unit.prefix + unit.atom
        if exponent == 2:
            name = f"square {name}"
        elif exponent == 3:
            name = f"cubic {name}"
        elif exponent is not None and exponent != 1:
            name = f"{name} to the power {exponent}"
    return name if unit.annotation is None else f"{name} {{{unit.annotation}}}"


# -- reading names back ---------------------------------------------------------------------

#: Other names people give units, read as these expressions (no prefix, no exponent added).
_OTHER_NAMES: dict[str, str] = {
    "micron": "um", "cc": "cm3", "mcg": "ug", "mmhg": "mm[Hg]", "cmh2o": "cm[H2O]",
    "iu": "[IU]", "°c": "Cel", "°f": "[degF]", "degree centigrade": "Cel", "hr": "h",
    "sec": "s", "gallon": "[gal_us]", "quart": "[qt_us]", "pint": "[pt_us]",
    "fluid ounce": "[foz_us]",
}
#: What is counted, read as an annotation: "beats per minute" -> ``{beats}/min``.
_COUNTED = {"beat": "{beats}", "breath": "{breaths}", "cell": "{cells}", "count": "{counts}"}
_NUMBER_WORDS = {word: f"10*{power}" for power, word in _POWER_WORDS.items()}
_EXPONENT_BEFORE = {"square": 2, "sq": 2, "cubic": 3, "cu": 3}
_EXPONENT_AFTER = {"squared": 2, "cubed": 3}
_ANNOTATION = re.compile(r"\{[^}]*\}")


def _reading_table() -> dict[str, list[tuple[tuple[str, ...], str, bool]]]:
    """The first word of each name -> (the words of the name, its expression, whether a prefix
    may come before it), longest names first. Where atoms share a name, the one read is the
    one people write (``L`` for liter, ``[IU]``); "square inch" and the like are read as
    their parts (``[in_i]2``), "ten" as a number."""
    chosen: dict[str, str] = {"liter": "L", "international unit": "[IU]"}
    for atom, name in ATOM_NAMES.items():
        if not name.startswith(("square ", "cubic ")) and name != "ten":
            chosen.setdefault(name.casefold(), atom)
    table: dict[str, list[tuple[tuple[str, ...], str, bool]]] = {}
    for name, atom in chosen.items():
        words = tuple(name.split())
        table.setdefault(words[0], []).append((words, atom, atom in METRIC_ATOMS))
    for name, expression in _OTHER_NAMES.items():
        words = tuple(name.split())
        table.setdefault(words[0], []).append((words, expression, False))
    for entries in table.values():
        entries.sort(key=lambda entry: -len(entry[0]))
    return table


_READINGS = _reading_table()
#: Prefix names, longest first, and the prefix each stands for ("deca" as well as "deka").
_PREFIX_READINGS = sorted(
    [(name, prefix) for prefix, name in PREFIX_NAMES.items()] + [("deca", "da")],
    key=lambda item: -len(item[0]),
)


def parse_unit_name(text: str) -> str | None:
    """The UCUM expression a unit's name stands for, or None when `text` is not one.

    The reverse of :func:`unit_name` for the same vocabulary: names of prefixed and plain atoms
    in any case, singular or plural, in American or British spelling ("milligrams per
    decilitre"), UCUM symbols as typed ("mg per dL"), "per", "square"/"cubic" before a unit or
    "squared"/"cubed" or "to the power n" after it, "thousand" and the other powers of ten, and
    what is counted ("beats per minute" -> ``{beats}/min``). A name must hold at least one
    unit: "thousand" alone is none.

    Parameters
    ----------
    text : str
        What someone typed: "kilogram per square meter".

    Returns
    -------
    str or None
        A valid UCUM expression (``kg/m2``), or None.
    """
    words = text.replace("\u00b5", "u").replace("\u03bc", "u").split()
    if not words or len(text) > MAX_LENGTH:
        return None
    groups: list[list[str]] = [[]]  # what is multiplied, then each "per" group
    exponent: int | None = None  # "square" or "cubic", waiting for its unit
    i = 0
    while i < len(words):
        low = words[i].casefold()
        if low == "per" or low in _EXPONENT_BEFORE:
            if exponent is not None or (low == "per" and len(groups) > 1 and not groups[-1]):
                return None
            if low == "per":
                groups.append([])
            else:
                exponent = _EXPONENT_BEFORE[low]
            i += 1
            continue
        power, used = _power_after(words, i)
        if power is not None:
            last = groups[-1]
            if not last or exponent is not None or _takes_no_exponent(last[-1]):
                return None
            last[-1] += str(power)
            i += used
            continue
        part, used = _read_part(words, i)
        if part is None:
            return None
        if exponent is not None:
            if _takes_no_exponent(part):
                return None
            part += str(exponent)
            exponent = None
        groups[-1].append(part)
        i += used
    parts = [part for group in groups for part in group]
    if exponent is not None or not any(_has_unit(p) for p in parts) or not all(groups[1:]):
        return None
    if len(parts) == 1 and len(groups) == 1:
        expression = parts[0].removeprefix("(").removesuffix(")")
    else:
        expression = ".".join(groups[0]) + "".join(
            "/" + (group[0] if len(group) == 1 else "(" + ".".join(group) + ")")
            for group in groups[1:]
        )
    return expression if is_valid_ucum(expression) else None


def _power_after(words: list[str], i: int) -> tuple[int | None, int]:
    """The exponent "squared", "cubed" or "to the power n" at ``words[i]`` gives, with the
    number of words it takes; (None, 0) when there is none."""
    low = words[i].casefold()
    if low in _EXPONENT_AFTER:
        return _EXPONENT_AFTER[low], 1
    if low == "to" and i + 3 < len(words) and [
        w.casefold() for w in words[i + 1 : i + 3]
    ] == ["the", "power"]:
        digits = words[i + 3].removeprefix("-").removeprefix("+")
        if digits.isascii() and digits.isdigit() and len(digits) < 5:
            return int(words[i + 3]), 4
    return None, 0


def _takes_no_exponent(part: str) -> bool:
    """A number, a thing counted, a unit with its exponent or a parenthesis takes no (other)
    exponent."""
    return part[-1] in "0123456789})"


def _has_unit(part: str) -> bool:
    """Whether `part` holds a unit symbol, not only numbers and annotations."""
    bare = _ANNOTATION.sub("", part)
    return any(c.isalpha() or c in "%['" for c in bare.replace("10*", "").replace("10^", ""))


def _word_forms(word: str) -> set[str]:
    """A word as a name may hold it: folded, and American-spelt, singular or plural."""
    low = word.casefold()
    forms = {low, american_spelling(low)}
    for form in list(forms):
        forms |= inflections(form)
    return forms


def _read_part(words: list[str], i: int) -> tuple[str | None, int]:
    """The expression of the unit named from ``words[i]`` on, with the number of words its
    name takes; (None, 0) when no unit is named there."""
    forms = _word_forms(words[i])
    for form in forms:
        if form in _NUMBER_WORDS:
            return _NUMBER_WORDS[form], 1
        if form in _COUNTED:
            return _COUNTED[form], 1
    best: tuple[str, int] | None = None
    for form in forms:
        for name, prefix in [("", ""), *_PREFIX_READINGS]:
            if not form.startswith(name):
                continue
            for name_words, expression, prefixable in _READINGS.get(form[len(name):], ()):
                size = len(name_words)
                if (prefix and not prefixable) or (best is not None and size <= best[1]):
                    continue
                if i + size <= len(words) and all(
                    name_words[k] in _word_forms(words[i + k]) for k in range(1, size)
                ):
                    best = (prefix + expression, size)
    word = words[i]
    if best is None and word.casefold() not in STOP_WORDS and (
        word.isdigit() or (any(c.isalpha() or c in "%['*^{" for c in word)
                           and is_valid_ucum(word))
    ):
        best = (word, 1)
    if best is None:
        return None, 0
    expression, size = best
    return (f"({expression})" if any(c in expression for c in "./") else expression), size


@dataclass(frozen=True, slots=True)
class _Unit:
    """A unit atom with its prefix (``""`` for none) and exponent: ``mm2``, ``[in_i]``."""

    prefix: str
    atom: str
    exponent: int | None
    annotation: str | None


@dataclass(frozen=True, slots=True)
class _Factor:
    """A positive integer (``8`` in ``g/(8.h)``), or an annotation alone (``{beats}``)."""

    digits: str
    annotation: str | None


@dataclass(frozen=True, slots=True)
class _Group:
    """A parenthesised term: ``(kg.d)`` in ``mg/(kg.d)``."""

    term: list[tuple[str, _Component]]
    annotation: str | None


_Component = _Unit | _Factor | _Group


class _Parser:
    """A recursive-descent parser of UCUM's grammar (main-term, term, component).

    A term is read as its components, each with the operator before it (``.`` or ``/``; the
    first has ``.``, or ``/`` for the leading ``/`` of a main term)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, reason: str) -> _Invalid:
        return _Invalid(f"{reason} (at character {self.pos + 1})")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def main_term(self) -> list[tuple[str, _Component]]:
        leading = "."
        if self.peek() == "/":
            self.pos += 1
            leading = "/"
        term = self.term()
        if self.pos < len(self.text):
            raise self.fail(f"unexpected {self.peek()!r}")
        return [(leading, term[0][1]), *term[1:]]

    def term(self) -> list[tuple[str, _Component]]:
        term = [(".", self.component())]
        while self.peek() in (".", "/") and self.peek():
            operator = self.peek()
            self.pos += 1
            term.append((operator, self.component()))
        return term

    def component(self) -> _Component:
        char = self.peek()
        if not char:
            raise self.fail("a unit is missing")
        if char == "(":
            self.pos += 1
            term = self.term()
            if self.peek() != ")":
                raise self.fail("')' is missing")
            self.pos += 1
            # Not in the BNF, but in UCUM's own examples: g/(8.h){shift}.
            return _Group(term, self.annotation() if self.peek() == "{" else None)
        if char == "{":
            return _Factor("", self.annotation())
        start = self.pos
        symbol = self.symbol()
        if not symbol:
            raise self.fail(f"unexpected {char!r}")
        if symbol.isdigit():
            # A factor (a positive integer), which takes no exponent.
            return _Factor(symbol, self.annotation() if self.peek() == "{" else None)
        unit, exponent = _split_exponent(symbol)
        split = _split_prefix(unit)
        if split is None:
            self.pos = start
            raise self.fail(f"unknown unit {unit!r}")
        if exponent and exponent.lstrip("+-") == "":
            raise self.fail("an exponent is missing its digits")
        annotation = self.annotation() if self.peek() == "{" else None
        return _Unit(*split, int(exponent) if exponent else None, annotation)

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

    def annotation(self) -> str:
        end = self.text.find("}", self.pos + 1)
        if end < 0:
            raise self.fail("'}' is missing")
        body = self.text[self.pos + 1 : end]
        bad = next((c for c in body if c not in _PRINTABLE), None)
        if bad is not None:
            raise self.fail(f"{bad!r} is not allowed in an annotation")
        self.pos = end + 1
        return body


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


def _split_prefix(unit: str) -> tuple[str, str] | None:
    """(prefix, atom) of a simple unit (``mm`` -> (``m``, ``m``), ``min`` -> (``""``,
    ``min``)), or None when `unit` is no atom, with a prefix only before a metric one."""
    if unit in _ATOMS:
        return "", unit
    for prefix in _PREFIX_ORDER:
        if unit.startswith(prefix) and unit[len(prefix):] in METRIC_ATOMS:
            return prefix, unit[len(prefix):]
    return None
