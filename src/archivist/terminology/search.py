"""Ranked search over code meanings, keywords and code values.

Search works the way people type: case- and accent-insensitive (:func:`~.text.fold`), word order
free, on word prefixes (``pneumo``), with small typing errors (``pnemothorax``), on code values
(``36118008``, the retired SNOMED-RT ``T-62000``, ``SCT:36118008``) and on pydicom keywords
(``Liver``).

Index: every meaning form of every concept (a *variant*) is an entry; an inverted index, made by
the generator and stored in the data file, maps each folded word to the variants containing it.
A query word matches index words exactly, in another form (singular or plural, American
spelling of a British word), as a prefix, or within a small Damerau edit distance
(found through one-deletion tables built per word length on first need, a few milliseconds); a
word typed without its space (``abdomenpelvis``) is split into two index words. A query that
is a common clinical abbreviation (:data:`ABBREVIATIONS`: ``HR``, ``LV``, ``ADC``) is also
searched written out.

Ranking (higher is better), per concept, best entry wins:

1. tier 4, score 1000: the query is the code value, ``SCHEME:VALUE``, or the SRT value;
2. tier 3: the folded query equals a folded meaning (990 for the preferred form, 980 for
   another), or is a pydicom keyword of the concept (970, case-insensitive);
3. tier 2: every query word matches a word of a meaning. Score: up to 100 for how well the
   words match (exact 1, other form 0.95, prefix 0.6 to 0.9, typo 0.7 or 0.5 per word), up
   to 25 for how much of the meaning the query covers (so "Pneumothorax" beats "Tension
   pneumothorax"), and small
   bonuses for the first word matching, the words in order, the preferred meaning form and
   membership of many context groups;
4. tier 1: some query words match; the tier-2 score scaled by the fraction matched.

Units: UCUM is a grammar, and PS3.16 lists only the units its context groups name. A query that
is a valid UCUM expression PS3.16 does not list (``mg/dL``, ``kg``) also finds that unit, made
by :meth:`~.catalogue.Terminology.unlisted_unit` with its name as meaning (tier 4, score 998:
after the codes whose value the query is, in its case or another; not for a value typed in
its case, nor an abbreviation such as ``hu``). So does a unit's name
(:func:`~.ucum.parse_unit_name`: "milligrams per deciliter", "mg per dL"): tier 3 at 990, as a
meaning equal to the query, or the listed unit of that name (``ml/min`` for "milliliters per
minute"). A name that is only unprefixed atoms and whose words are all words of the index
("foot", "gram", "second degree") stays behind the meanings: one atom ranks in tier 2 at 100,
several not at all. Units PS3.16 does not list are found with no CID filter, and with no scheme
filter or UCUM.

Results sort by tier, then score.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from archivist.terminology.catalogue import Concept, Terminology
from archivist.terminology.text import (
    STOP_WORDS,
    damerau_distance,
    fold,
    inflections,
    spelling_variants,
    strip_semantic_tag,
)
from archivist.terminology.ucum import (
    METRIC_ATOMS,
    OTHER_ATOMS,
    UNLISTED_NOTE,
    parse_unit_name,
    unit_name,
)

__all__ = ["ABBREVIATIONS", "SearchHit", "SearchIndex"]

_CODE_SCORE = 1000.0
_EXACT_PREFERRED = 990.0
_EXACT_OTHER = 980.0
_KEYWORD_SCORE = 970.0
#: A valid UCUM expression PS3.16 does not list, typed as the query (see "Units" above).
_UNIT_CODE_SCORE = _CODE_SCORE - 2
#: A unit named by unprefixed atoms whose words are all words of meanings ("foot").
_PLAIN_UNIT_SCORE = 100.0
#: Longer queries are cut: no code meaning is longer than a few hundred characters, and the
#: cost of a query grows with its words.
MAX_QUERY_LENGTH = 256
MAX_QUERY_WORDS = 16
#: Among equal scores, the schemes people look up most come first.
_SCHEME_ORDER = {"SCT": 0, "DCM": 1, "LN": 2, "UCUM": 3}
#: Abbreviations clinicians type for concepts whose meanings spell them out (a whole query):
#: the concept they stand for ranks with the meaning written out (``HR`` finds "Heart rate").
#: Only unambiguous ones in radiology and cardiology; curated, checked by a test against the
#: tables.
ABBREVIATIONS: dict[str, str] = {
    "mri": "magnetic resonance",
    "mra": "magnetic resonance angiography",
    "pet": "positron emission tomography",
    "ecg": "electrocardiography",
    "ekg": "electrocardiography",
    "hr": "heart rate",
    "bp": "blood pressure",
    "ef": "ejection fraction",
    "lv": "left ventricle",
    "rv": "right ventricle",
    "la": "left atrium",
    "ra": "right atrium",
    "ivc": "inferior vena cava",
    "svc": "superior vena cava",
    "adc": "apparent diffusion coefficient",
    "suv": "standardized uptake value",
    "hu": "hounsfield unit",
    "bmi": "body mass index",
    "gfr": "glomerular filtration rate",
    "roi": "region of interest",
    "lad": "left anterior descending coronary artery",
    "rca": "right coronary artery",
    "aca": "anterior cerebral artery",
    "mca": "middle cerebral artery",
    "pca": "posterior cerebral artery",
    "ica": "internal carotid artery",
    "pe": "pulmonary embolism",
    "cbd": "common bile duct",
    "csf": "cerebrospinal fluid",
    "mi": "myocardial infarction",
    "af": "atrial fibrillation",
    "chf": "congestive heart failure",
    "cca": "common carotid artery",
}
#: The weight of a query word matching another form of an index word (plural, spelling).
_FORM_WEIGHT = 0.95
#: The variants given the finer ranking bonuses when few results are asked for.
_FINE_RANKED = 400


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result.

    Attributes
    ----------
    concept : Concept
        The concept found.
    score : float
        Its rank score (see the module documentation); higher is better.
    matched : str
        The meaning form, keyword or code value that matched.
    note : str or None
        For a UCUM unit PS3.16 does not list, that it is one (:data:`~.ucum.UNLISTED_NOTE`).
    """

    concept: Concept
    score: float
    matched: str
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: the concept's fields plus ``score`` and ``matched`` (and ``note``
        for a unit PS3.16 does not list)."""
        out = self.concept.to_dict()
        out["score"] = round(self.score, 2)
        out["matched"] = self.matched
        if self.note is not None:
            out["note"] = self.note
        return out


class SearchIndex:
    """An inverted index over a :class:`Terminology`'s meanings, keywords and code values.

    The word index comes precomputed in the data file; building this object only makes a dict
    of the words (about 1 ms). The tables for typos and keywords are built on first need.
    """

    def __init__(self, terminology: Terminology) -> None:
        self.terminology = terminology
        self._vocabulary = terminology.search_words
        self._word_row: dict[str, int] = dict(
            zip(terminology.search_words, range(len(terminology.search_words)))
        )
        self._posting_cache: dict[str, list[int]] = {}
        self._cid_counts: dict[int, int] = {}
        self._deletions: dict[int, dict[str, list[str]]] = {}
        self._lengths: dict[int, list[str]] | None = None
        self._unit_names: dict[str, int] | None = None

    def postings(self, word: str) -> list[int]:
        """The variants whose folded meaning contains `word`."""
        found = self._posting_cache.get(word)
        if found is None:
            row = self._word_row.get(word)
            found = (
                [] if row is None
                else [int(v) for v in self.terminology.search_postings[row].split()]
            )
            self._posting_cache[word] = found
        return found

    # -- word expansion ---------------------------------------------------------------------

    def _deletion_table(self, length: int) -> dict[str, list[str]]:
        """Index words of `length` letters under each form with one letter deleted."""
        table = self._deletions.get(length)
        if table is None:
            table = {}
            for word in self._by_length().get(length, ()):
                for i in range(length):
                    table.setdefault(word[:i] + word[i + 1 :], []).append(word)
            self._deletions[length] = table
        return table

    def _by_length(self) -> dict[int, list[str]]:
        if self._lengths is None:
            lengths: dict[int, list[str]] = {}
            for word in self._vocabulary:
                if not word.isdigit():
                    lengths.setdefault(len(word), []).append(word)
            self._lengths = lengths
        return self._lengths

    def _typo_candidates(self, word: str) -> set[str]:
        """Index words one deletion away from `word`, or sharing a one-deletion form with it
        (symmetric deletion: every edit of distance 1, and some of distance 2)."""
        size = len(word)
        found: set[str] = set(self._deletion_table(size + 1).get(word, ()))
        same = self._deletion_table(size)
        shorter = set(self._by_length().get(size - 1, ()))
        for i in range(size):
            deleted = word[:i] + word[i + 1 :]
            if deleted in shorter:
                found.add(deleted)
            found.update(same.get(deleted, ()))
        return found

    @staticmethod
    def _one_edit_forms(word: str) -> set[str]:
        return {word, *(word[:i] + word[i + 1 :] for i in range(len(word)))}

    def _typos(self, word: str) -> dict[str, float]:
        """Index words within Damerau distance 1 (2 for words of 8+ letters) of `word`."""
        found: dict[str, float] = {}
        limit = 2 if len(word) >= 8 else 1
        for candidate in self._typo_candidates(word):
            distance = damerau_distance(word, candidate, limit)
            if distance <= limit:
                found[candidate] = 0.7 if distance == 1 else 0.5
        return found

    def word_forms(self, word: str) -> set[str]:
        """Index words that are another form of `word`: its singular or plural (``lungs`` ->
        ``lung``, ``ovaries`` -> ``ovary``), or its American spelling (``tumour`` ->
        ``tumor``, ``haemorrhages`` -> ``hemorrhage``, ``centre`` -> ``center``)."""
        spelt = {word} | spelling_variants(word)
        forms = set(spelt)
        for form in spelt:
            forms |= inflections(form)
        forms.discard(word)
        return {form for form in forms if form in self._word_row}

    def expand(self, word: str) -> dict[str, float]:
        """Index words that `word` may stand for, with the weight of each match.

        Exact 1.0; another form of the word (:meth:`word_forms`: singular or plural, American
        spelling) 0.95; a prefix (``pneumo`` for ``pneumothorax``) 0.6 to 0.9 by how much of the
        word is typed; a typo (Damerau distance 1, or 2 for words of 8+ letters) 0.7 or 0.5. Typos are
        only considered when the word is not in the index and is no word's prefix.
        """
        out: dict[str, float] = {}
        if word in self._word_row:
            out[word] = 1.0
        for form in self.word_forms(word):
            out[form] = _FORM_WEIGHT
        if len(word) >= 2 or word.isdigit():
            start = bisect.bisect_left(self._vocabulary, word)
            for candidate in self._vocabulary[start:]:
                if not candidate.startswith(word):
                    break
                if candidate != word and candidate not in out:
                    out[candidate] = 0.6 + 0.3 * len(word) / len(candidate)
        if not out and len(word) >= 4 and not word.isdigit():
            out.update(self._typos(word))
            # A typo in a word still being typed: "pnemo" -> "pneumothorax". Compare the word
            # with each distinct prefix of the same length through their one-deletion forms.
            if not out and len(word) >= 5:
                forms = self._one_edit_forms(word)
                size = len(word)
                start = bisect.bisect_left(self._vocabulary, word[0])
                verdict: dict[str, bool] = {}
                for candidate in self._vocabulary[start:]:
                    if candidate[0] != word[0]:
                        break
                    if len(candidate) <= size:
                        continue
                    prefix = candidate[:size]
                    close = verdict.get(prefix)
                    if close is None:
                        close = not forms.isdisjoint(self._one_edit_forms(prefix)) or (
                            candidate[: size - 1] in forms
                        )
                        verdict[prefix] = close
                    if close:
                        out[candidate] = 0.45
        return out

    # -- search -----------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        scheme: str | None = None,
        cid: int | None = None,
        limit: int = 20,
    ) -> list[SearchHit]:
        """Concepts for `query`, best first.

        Parameters
        ----------
        query : str
            Words of a meaning in any order and case, word prefixes, a code value
            (``36118008``, ``T-62000``), ``SCHEME:VALUE``, or a pydicom keyword.
        scheme : str, optional
            Only concepts of this Coding Scheme Designator (case-insensitive; ``SRT`` means
            ``SCT``).
        cid : int, optional
            Only members of this context group (PS3.16 Annex B).
        limit : int
            At most this many results (0 or less: all).

        Returns
        -------
        list of SearchHit
        """
        text = query.strip()[:MAX_QUERY_LENGTH]
        if not text:
            return []
        best: dict[int, tuple[int, float, str]] = {}

        def offer(index: int, tier: int, score: float, matched: str) -> None:
            if index not in best or (tier, score) > best[index][:2]:
                best[index] = (tier, score, matched)

        # Code values, SCHEME:VALUE, retired SNOMED values and keywords.
        term = self.terminology
        # "µm" (micro sign, or Greek mu) is how people write the UCUM unit "um".
        value_text = text.replace("\u00b5", "u").replace("\u03bc", "u")
        coded = False  # the query is some code's value, as typed
        for index in term.find_value(value_text):
            # The value as typed (UCUM "ms") before one found in another case (DCM "MS").
            exact = value_text in (term.values[index], term.concept_at(index).srt)
            coded = coded or exact
            offer(index, 4, _CODE_SCORE if exact else _CODE_SCORE - 1, text)
        if ":" in text:
            code_scheme, _, code_value = text.partition(":")
            found = term.index_of(code_scheme.strip(), code_value.strip())
            if found is None:
                found = term.index_of(code_scheme.strip().upper(), code_value.strip())
            if found is not None:
                offer(found, 4, _CODE_SCORE, text)
        self._offer_keywords(text, offer)

        allowed = self._filter(scheme, cid)
        # The filter applies before the words are ranked, and with no limit every match is
        # ranked: only the finer bonuses are kept for the best few hundred.
        folded = fold(text)
        self._rank_words(folded, offer, allowed, limit)
        expansion = ABBREVIATIONS.get(folded)
        if expansion is not None:
            self._offer_keywords(expansion, offer)
            self._rank_words(expansion, offer, allowed, limit)
        units = self._units(text, value_text, coded, offer)
        if cid is not None or (scheme is not None and scheme.strip().casefold() != "ucum"):
            units = {}  # a listed unit the query names is offered, and filtered, as any code
        ranked: list[tuple[int, float, tuple[int, int, str], int | Concept, str]] = [
            (tier, score, self._tie_break(index), index, matched)
            for index, (tier, score, matched) in best.items()
            if allowed is None or index in allowed
        ]
        ranked += [
            (tier, score, (_SCHEME_ORDER["UCUM"], len(unit.meaning), unit.value), unit, text)
            for tier, score, unit in units.values()
        ]
        ranked.sort(key=lambda item: (-item[0], -item[1], item[2]))
        if limit > 0:
            ranked = ranked[:limit]
        concept_at = self.terminology.concept_at
        return [
            SearchHit(found, score, matched, UNLISTED_NOTE) if isinstance(found, Concept)
            else SearchHit(concept_at(found), score, matched)
            for _, score, _, found, matched in ranked
        ]

    def _units(
        self, text: str, value_text: str, coded: bool, offer: Any
    ) -> dict[str, tuple[int, float, Concept]]:
        """The UCUM units PS3.16 does not list that the query is or names, by expression,
        each with its tier and score; a listed unit named by the query is offered instead
        (see "Units" in the module documentation)."""
        term = self.terminology
        units: dict[str, tuple[int, float, Concept]] = {}
        expression = parse_unit_name(text)
        code_scheme, colon, code_value = text.partition(":")
        typed = code_value.strip() if colon and code_scheme.strip().casefold() == "ucum" else (
            # Not a code's value as typed (DCM MR), an abbreviation ("hu" is Hounsfield unit,
            # not hecto-u) nor a name read otherwise ("ph" is pH)
            None if coded or fold(text) in ABBREVIATIONS or expression not in (None, value_text)
            else value_text
        )
        # Numbers alone (36118008) are valid UCUM, but no unit anyone looks for.
        if typed and any(c.isalpha() or c in "%['{" for c in typed):
            unit = term.unlisted_unit(typed)
            if unit is not None:
                units[unit.value] = (4, _CODE_SCORE if colon else _UNIT_CODE_SCORE, unit)
        if expression is None or expression == value_text:
            return units  # symbols alone are a code, above
        atoms = expression.split(".")
        tier, score = 3, _EXACT_PREFERRED
        if set(atoms) <= METRIC_ATOMS | OTHER_ATOMS and all(
            word in self._word_row or self.word_forms(word)
            for word in fold(text).split() if word not in STOP_WORDS
        ):
            if len(atoms) > 1:
                return units  # "second degree" is no unit anyone looks for
            tier, score = 2, _PLAIN_UNIT_SCORE
        name = unit_name(expression)
        listed = self._listed_units().get(name)
        if listed is not None:
            offer(listed, tier, score, term.meanings[listed])
        elif expression not in units:
            unit = term.unlisted_unit(expression)
            if unit is not None:
                units[expression] = (tier, score, unit)
        return units

    def _listed_units(self) -> dict[str, int]:
        """The listed UCUM units (valid ones) by their name in words: "milliliters per
        minute" finds ``ml/min``, and ``mL/min`` is not made again."""
        if self._unit_names is None:
            term = self.terminology
            names: dict[str, int] = {}
            for index in term.scheme_range("UCUM"):
                try:
                    names.setdefault(unit_name(term.values[index]), index)
                except ValueError:
                    continue  # PS3.16 lists a few that are not valid UCUM (ppm, diop)
            self._unit_names = names
        return self._unit_names

    def _offer_keywords(self, text: str, offer: Any) -> None:
        """Tier 3 for the concepts whose pydicom keyword is `text` without its spaces, as typed
        or in American spelling (``Millimetre`` -> ``Millimeter``)."""
        compact = "".join(text.split())
        if len(compact) < 3 or not compact.isalnum():
            return
        term = self.terminology
        for spelt in (compact, *sorted(spelling_variants(compact.lower()))):
            for variant in term.variants_with_keyword(spelt):
                offer(term.concept_of_variant(variant), 3, _KEYWORD_SCORE, term.keywords[variant])

    def split_compound(self, word: str) -> list[str]:
        """Split a word typed without its space (``abdomenpelvis``, ``xray``) into two index
        words, when it is neither an index word nor the prefix of one; else ``[word]``.

        Parts of two letters are only taken when the word is no typo of an index word (so
        that ``brest`` stays ``breast``, not ``br`` + ``est``); a one-letter part only for the
        ``x`` of ``xray``.
        """
        if len(word) < 4 or word in self._word_row or word.isdigit() or self.word_forms(word):
            return [word]
        start = bisect.bisect_left(self._vocabulary, word)
        if start < len(self._vocabulary) and self._vocabulary[start].startswith(word):
            return [word]
        best: list[str] = [word]
        best_size = 0
        for i in range(1, len(word) - 1):
            left, right = word[:i], word[i:]
            if (len(left) >= 2 or left == "x") and left in self._word_row and (
                right in self._word_row
            ):
                size = 3 if left == "x" else min(len(left), len(right))
                if size > best_size:
                    best, best_size = [left, right], size
        if best_size == 2 and self._typos(word):
            return [word]
        return best

    def _rank_words(
        self, folded: str, offer: Any, allowed: set[int] | None, limit: int
    ) -> None:
        words = [part for word in folded.split() for part in self.split_compound(word)]
        folded = " ".join(words)
        significant = list(dict.fromkeys(w for w in words if w not in STOP_WORDS)) or words
        significant = significant[:MAX_QUERY_WORDS]
        if not significant:
            return
        term = self.terminology
        expansions: list[dict[str, float]] = []
        totals: dict[int, list[float]] = {}
        for word in significant:
            expansion = self.expand(word)
            expansions.append(expansion)
            weights: dict[int, float] = {}
            for candidate, weight in expansion.items():
                for variant in self.postings(candidate):
                    if weight > weights.get(variant, 0.0):
                        weights[variant] = weight
            for variant, weight in weights.items():
                slot = totals.get(variant)
                if slot is None:
                    totals[variant] = [1.0, weight]
                else:
                    slot[0] += 1.0
                    slot[1] += weight
        if allowed is not None:
            totals = {
                variant: slot for variant, slot in totals.items()
                if term.concept_of_variant(variant) in allowed
            }
        if not totals:
            return
        n = len(significant)
        # Preliminary score; the finer bonuses only for the best few hundred variants.
        scored = []
        for variant, (matched_words, weight_sum) in totals.items():
            text_words = term.folded[variant].split()
            size = sum(1 for w in text_words if w not in STOP_WORDS) or len(text_words)
            coverage = min(1.0, matched_words / size)
            scored.append(
                (matched_words, 100.0 * weight_sum / n + 25.0 * coverage, variant, text_words)
            )
        scored.sort(key=lambda item: (-item[0], -item[1]))
        n_concepts = len(term)
        # Only the best variants get the finer bonuses (a few points): enough of them that the
        # `limit` best concepts are among them; with no limit, all.
        fine = len(scored) if limit <= 0 else max(_FINE_RANKED, 4 * limit)
        for position, (matched_words, score, variant, text_words) in enumerate(scored):
            if position >= fine:
                break
            if text_words and text_words[0] in expansions[0]:
                score += 4.0
            if n > 1 and self._in_order(text_words, expansions):
                score += 3.0
            if variant >= n_concepts:
                score -= 2.0
            index = term.concept_of_variant(variant)
            score += 0.3 * min(self._cid_count(index), 10)
            # A meaning equal to the query outranks every partial match (tier 3); then the
            # concepts matching all the query's words (tier 2), then the others, scaled down.
            if term.folded[variant] == folded:
                tier, score = 3, (_EXACT_PREFERRED if variant < n_concepts else _EXACT_OTHER)
            elif fold(strip_semantic_tag(term.meanings[variant])) == folded:
                # A SNOMED CT Fully Specified Name: "Body mass index (observable entity)".
                tier, score = 3, _EXACT_OTHER
            elif matched_words >= n:
                tier = 2
            else:
                tier, score = 1, score * matched_words / n
            offer(index, tier, score, term.meanings[variant])

    def _cid_count(self, index: int) -> int:
        """The number of context groups of concept `index` (without building the concept)."""
        count = self._cid_counts.get(index)
        if count is None:
            term = self.terminology
            count = len({c for v in term.variants_of(index) for c in term.variant_cids(v)})
            self._cid_counts[index] = count
        return count

    @staticmethod
    def _in_order(entry_words: list[str], expansions: list[dict[str, float]]) -> bool:
        position = -1
        for expansion in expansions:
            found = next(
                (i for i, w in enumerate(entry_words) if i > position and w in expansion), None
            )
            if found is None:
                return False
            position = found
        return True

    def _filter(self, scheme: str | None, cid: int | None) -> set[int] | None:
        if scheme is None and cid is None:
            return None
        allowed: set[int] | None = None
        if scheme is not None:
            wanted = scheme.strip().casefold()
            if wanted in {"srt", "snm3", "99sdm"}:
                wanted = "sct"
            allowed = set()
            for name in self.terminology.scheme_counts:
                if name.casefold() == wanted:
                    allowed = set(self.terminology.scheme_range(name))
        if cid is not None:
            members = self.terminology.member_indices(cid)
            allowed = members if allowed is None else allowed & members
        return allowed

    def _tie_break(self, index: int) -> tuple[int, int, str]:
        term = self.terminology
        return (
            _SCHEME_ORDER.get(term.scheme_of(index), 9),
            len(term.meanings[index]),
            term.values[index],
        )
