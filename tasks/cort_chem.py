"""`cort_chem`: out-of-distribution chemistry problems with RDKit as ground truth.

The CoRT paper reports that its model adopted RDKit in 81.3% of the cases on out-of-distribution
chemistry problems; that set is not public, so cortbench builds its own. Problems are stated in words
about real, named molecules (`chem_molecules.py`) given as SMILES, at three levels:

- easy: one property of one molecule (molar mass, monoisotopic mass, formula, heavy atoms, rings,
  aromatic rings, Lipinski donors/acceptors, rotatable bonds, TPSA, Crippen logP, stereocentres);
- medium: combinations (which of three has the highest/lowest X, differences in TPSA or logP,
  Lipinski violations, mass percentage of an element, degree of unsaturation);
- hard: multi-step (formula, molar mass or SMILES of the product of a named reaction, computed with
  reaction SMARTS; mass balances: grams of product, grams of reactant, percent yield, combustion).

`generate()` builds the set deterministically: a seeded `random.Random`, sampling only from tuples
in fixed order, floats written with fixed decimals. The shipped file `data/cort_chem_v1.jsonl`
holds its output; `cortbench chem-generate` writes it again (byte for byte with the same RDKit
version, which every row records in `meta.rdkit`). Loading and grading need no RDKit (only grading
a SMILES answer does); generation does. Grading: `cortbench.analyzers.chem.grade_chem`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from .chem_molecules import MOLECULES, Molecule
from .prompts import COT_INSTRUCTION
from .registry import register_task
from .spec import Protocol, TaskSpec

CHEM_VERSION = 1
CHEM_SEED = 1003  # fixed with version 1; any other seed is another set
CHEM_SIZE = 244
DATA_FILE = Path(__file__).resolve().parent / "data" / f"cort_chem_v{CHEM_VERSION}.jsonl"
ANSWER_TYPES = ("number", "integer", "formula", "smiles", "choice")
LEVELS = ("easy", "medium", "hard")

# Numeric tolerances: an answer x is right when |x - gold| <= max(abs, rel * |gold|) (+1e-9 for
# float noise). Golds are rounded to the decimals the problem asks for, so `abs` is at least one unit
# of the last asked decimal: a correct value rounded on the other side of a half still passes.
TOLERANCES: dict[str, dict[str, float]] = {
    # Average masses: atomic-weight tables differ (RDKit C 12.011, older tables 12.0107; S, Cl by
    # 0.003-0.005), up to ~0.03 g/mol on a 300 g/mol drug; monoisotopic mass (off by ~0.1) still fails.
    "mw": {"abs": 0.02, "rel": 0.0001},
    "exact_mass": {"abs": 0.0002, "rel": 0.0},  # isotope-mass tables agree to 1e-6 Da
    "tpsa": {"abs": 0.01, "rel": 0.0},  # a fixed table of fragment values: only rounding
    "logp": {"abs": 0.01, "rel": 0.0},  # ditto (Wildman-Crippen atom contributions)
    "difference": {"abs": 0.02, "rel": 0.0},  # two rounded values subtracted
    "mass_percent": {"abs": 0.02, "rel": 0.0},
    # Grams: a wrong product (one H more or less on ~200 g/mol, 0.5%) or yield (5% steps) fails;
    # intermediate rounding to 4 significant figures passes.
    "grams": {"abs": 0.01, "rel": 0.002},
    "percent_yield": {"abs": 0.1, "rel": 0.0},
}
EXACT = {"abs": 0.0, "rel": 0.0}  # integers

SPEC = register_task(
    TaskSpec(
        "cort_chem",
        f"cortbench chemistry (out of distribution, RDKit ground truth), v{CHEM_VERSION}: {CHEM_SIZE} problems "
        "about named molecules; numbers with tolerance, integers, formulas, SMILES, choices",
        label="Chem",
        file=str(DATA_FILE),
        size=CHEM_SIZE,
        answer_type="mixed",
        scorer="chem",  # analyzers/chem.py: tolerances, formulas, canonical SMILES, choices
        instruction=COT_INSTRUCTION,  # the paper's instruction: RDKit is never suggested
        protocol=Protocol(k=4),
    )
)

_ASK = {
    "integer": "Give the answer as an integer.",
    "formula": "Write the formula in Hill notation (C first, then H, then the other elements "
    "alphabetically, e.g. C2H6O).",
    "smiles": "Give the product as a SMILES string (any valid SMILES of that molecule; keep the "
    "stereochemistry the starting materials specify and add none).",
    "choice": "Answer with the letter A, B or C.",
}
_LOGP = "Wildman-Crippen logP (the atom-contribution octanol/water logP of Wildman and Crippen, 1999)"
_TPSA = (
    "topological polar surface area (TPSA: Ertl's fragment contributions of nitrogen and oxygen only; "
    "sulfur and phosphorus are not counted)"
)
_ELEMENTS = {"C": "carbon", "N": "nitrogen", "O": "oxygen", "S": "sulfur", "F": "fluorine", "Cl": "chlorine"}
_GRAMS = ("1.00", "2.00", "2.50", "5.00", "7.50", "10.0", "12.5", "15.0", "20.0", "25.0", "50.0")
_YIELDS = tuple(range(50, 100, 5))


def _ask_number(unit: str | None, decimals: int) -> str:
    unit_text = f" in {unit}" if unit else ""
    return f"Give the value{unit_text}, rounded to {decimals} decimal places, as a number only."


def _ref(m: Molecule) -> str:
    return f"{m.name} (SMILES: {m.smiles})"


def _fmt(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return "0." + "0" * decimals if text.lstrip("-").strip("0.") == "" else text  # no "-0.00"


# ---------------------------------------------------------------------------------------------
# Properties (RDKit; imported only when generating)


def _rdkit():
    try:
        import rdkit
        from rdkit import Chem, RDLogger
    except ImportError:
        raise RuntimeError(
            "generating the chemistry set needs RDKit: pip install 'cortbench[chem]' (loading and grading "
            "the shipped set do not)"
        ) from None
    RDLogger.DisableLog("rdApp.*")
    return rdkit, Chem


class _Props:
    """RDKit's values for one molecule, computed once."""

    def __init__(self, m: Molecule) -> None:
        _, Chem = _rdkit()
        from rdkit.Chem import Crippen, Descriptors, rdMolDescriptors

        mol = Chem.MolFromSmiles(m.smiles)
        if mol is None:
            raise ValueError(f"{m.name}: SMILES {m.smiles} does not parse")
        self.mol = mol
        self.mw = Descriptors.MolWt(mol)
        self.exact_mass = Descriptors.ExactMolWt(mol)
        self.formula = rdMolDescriptors.CalcMolFormula(mol)
        self.heavy_atoms = mol.GetNumHeavyAtoms()
        self.rings = rdMolDescriptors.CalcNumRings(mol)
        self.aromatic_rings = rdMolDescriptors.CalcNumAromaticRings(mol)
        self.hbd = rdMolDescriptors.CalcNumLipinskiHBD(mol)  # H atoms on N and O
        self.hba = rdMolDescriptors.CalcNumLipinskiHBA(mol)  # N and O atoms
        self.rotatable_bonds = len(mol.GetSubstructMatches(_pattern("[!$(*#*)&!D1]-&!@[!$(*#*)&!D1]")))
        self.tpsa = rdMolDescriptors.CalcTPSA(mol)
        self.logp = Crippen.MolLogP(mol)
        new = Chem.FindMolChiralCenters(mol, includeUnassigned=True, useLegacyImplementation=False)
        legacy = Chem.FindMolChiralCenters(mol, includeUnassigned=True, useLegacyImplementation=True)
        self.stereocentres = len(new)
        self.stereo_clear = len(new) == len(legacy)
        self.lipinski = sum((self.mw > 500, self.logp > 5, self.hbd > 5, self.hba > 10))
        counts: dict[str, int] = {}
        for atom in Chem.AddHs(mol).GetAtoms():
            counts[atom.GetSymbol()] = counts.get(atom.GetSymbol(), 0) + 1
        self.counts = counts
        weights = Chem.GetPeriodicTable()
        self.mass_percent = {el: 100 * n * weights.GetAtomicWeight(el) / self.mw for el, n in counts.items()}
        halogens = sum(counts.get(x, 0) for x in ("F", "Cl", "Br", "I"))
        self.unsaturation2 = 2 * counts.get("C", 0) + 2 + counts.get("N", 0) - counts.get("H", 0) - halogens
        # aromaticity is only asked where no aromatic atom carries an exocyclic double bond (caffeine's
        # c(=O) rings are aromatic to RDKit, not to every chemist) and no aromatic atom is charged
        self.aromatic_clear = not any(
            a.GetIsAromatic() and (a.GetFormalCharge() or any(
                b.GetBondTypeAsDouble() == 2 and not b.IsInRing() for b in a.GetBonds()))
            for a in mol.GetAtoms()
        )  # fmt: skip


_PATTERNS: dict[str, Any] = {}


def _pattern(smarts: str):
    if smarts not in _PATTERNS:
        _PATTERNS[smarts] = _rdkit()[1].MolFromSmarts(smarts)
    return _PATTERNS[smarts]


# ---------------------------------------------------------------------------------------------
# Reactions: one limiting substrate (and possibly a partner in excess), one product asked for


class _Reaction:
    def __init__(self, name, smarts, text, product, substrates, partners=(), pick=None, repeat=False):
        self.name = name  # "Fischer esterification", ...
        self.smarts = smarts
        self.text = text  # "{A} ... {B} ...": A the limiting substrate, B the partner
        self.product = product  # how the problem names the product asked for
        self.substrates = substrates
        self.partners = partners
        self.pick = pick  # None: the single product; "heavier" / "lighter": of two products
        self.repeat = repeat  # apply until nothing matches (all C=C hydrogenated)


_REACTIONS = (
    _Reaction(
        "Fischer esterification",
        "[C:1](=[O:2])-[OX2H1].[OX2H1:3]-[CX4:4]>>[C:1](=[O:2])[O:3][C:4]",
        "{A} is heated with excess {B} and a catalytic amount of sulfuric acid (Fischer esterification): "
        "the carboxylic acid group condenses with the alcohol's hydroxyl group to an ester, releasing water.",
        "the ester",
        (
            "acetic acid",
            "propanoic acid",
            "butanoic acid",
            "benzoic acid",
            "salicylic acid",
            "phenylacetic acid",
            "trans-cinnamic acid",
            "ibuprofen",
        ),
        (
            "methanol",
            "ethanol",
            "1-propanol",
            "2-propanol",
            "1-butanol",
            "benzyl alcohol",
            "3-methylbutan-1-ol",
        ),
    ),
    _Reaction(
        "amide coupling",
        "[C:1](=[O:2])-[OX2H1].[NX3;H2,H1;!$(N-C=O);!$(N-S(=O)=O):3]>>[C:1](=[O:2])[N:3]",
        "{A} is coupled with excess {B} using a carbodiimide coupling reagent: the carboxylic acid group and "
        "the amine condense to an amide, releasing water.",
        "the amide",
        ("acetic acid", "propanoic acid", "benzoic acid", "phenylacetic acid"),
        ("methylamine", "ethylamine", "diethylamine", "benzylamine", "aniline"),
    ),
    _Reaction(
        "O-acetylation",
        "[c:1]-[OX2H1:2]>>[c:1][O:2]C(C)=O",
        "{A} is treated with excess acetic anhydride (SMILES: CC(=O)OC(C)=O) and a catalytic amount of acid: "
        "its phenolic OH group is acetylated to an acetate ester, releasing acetic acid.",
        "the acetylated product",
        ("salicylic acid", "phenol", "thymol", "eugenol", "vanillin"),
    ),
    _Reaction(
        "N-acetylation",
        "[NX3;H2;!$(N-C=O):1]>>[N:1]C(C)=O",
        "{A} is treated with one equivalent of acetic anhydride (SMILES: CC(=O)OC(C)=O): its primary amino "
        "group, and nothing else, is acetylated to an acetamide, releasing acetic acid.",
        "the acetylated product",
        ("aniline", "4-aminophenol", "4-ethoxyaniline", "benzylamine"),
    ),
    _Reaction(
        "catalytic hydrogenation",
        "[C:1]=[C:2]>>[C:1][C:2]",
        "{A} is stirred under hydrogen gas with a palladium-on-carbon catalyst until every non-aromatic "
        "carbon-carbon double bond is reduced to a single bond (aromatic rings and C=O groups are untouched).",
        "the hydrogenated product",
        ("styrene", "cyclohexene", "trans-cinnamic acid", "eugenol", "capsaicin", "resveratrol", "geraniol"),
        repeat=True,
    ),
    _Reaction(
        "sodium borohydride reduction",
        "[CX3;!$(C-[O,N,S]):1]=[OX1:2]>>[C:1][O:2]",
        "{A} is reduced with sodium borohydride in methanol: its aldehyde or ketone C=O group is reduced to an "
        "alcohol (C-OH) and nothing else reacts.",
        "the alcohol formed",
        ("acetophenone", "cyclohexanone", "benzaldehyde", "vanillin", "acetone", "cinnamaldehyde"),
    ),
    _Reaction(
        "ester hydrolysis (saponification)",
        "[C:1](=[O:2])-[OX2:3]-[#6:4]>>[C:1](=[O:2])O.[O:3][#6:4]",
        "{A} is heated with aqueous sodium hydroxide and the mixture is then acidified: its ester group is "
        "hydrolysed to a carboxylic acid and an alcohol (or phenol), both isolated in their neutral forms.",
        "the {pick} of the two organic products (by molar mass)",
        ("ethyl acetate", "aspirin", "benzocaine", "procaine"),
        pick="heavier",
    ),
)


def _run_reaction(reaction: _Reaction, reactants: list[Molecule]) -> list[str]:
    """Canonical SMILES of the products of one reaction; exactly one outcome, else an error."""
    _, Chem = _rdkit()
    from rdkit.Chem import rdChemReactions

    rxn = rdChemReactions.ReactionFromSmarts(reaction.smarts)
    mols = [Chem.MolFromSmiles(m.smiles) for m in reactants]
    while True:
        outcomes = set()
        for products in rxn.RunReactants(tuple(mols)):
            smiles = []
            for p in products:
                Chem.SanitizeMol(p)
                smiles.append(Chem.MolToSmiles(Chem.MolFromSmiles(Chem.MolToSmiles(p))))
            outcomes.add(tuple(smiles))
        if not outcomes:
            raise ValueError(f"{reaction.name} does not apply to {[m.name for m in reactants]}")
        if len(outcomes) != 1 and not reaction.repeat:
            raise ValueError(
                f"{reaction.name} of {[m.name for m in reactants]} is ambiguous: {sorted(outcomes)}"
            )
        result = list(sorted(outcomes)[0])
        if not reaction.repeat:
            return result
        mols = [Chem.MolFromSmiles(result[0])]
        if not mols[0].HasSubstructMatch(rxn.GetReactantTemplate(0)):
            return result


class _Instance:
    """One reaction with its reactants, run: the product the problem asks about."""

    def __init__(self, reaction: _Reaction, substrate: Molecule, partner: Molecule | None, pick: str | None):
        self.reaction, self.substrate, self.partner, self.pick = reaction, substrate, partner, pick
        products = _run_reaction(reaction, [substrate] + ([partner] if partner else []))
        if pick:
            from rdkit.Chem import Descriptors

            _, Chem = _rdkit()
            products = sorted(products, key=lambda s: Descriptors.MolWt(Chem.MolFromSmiles(s)))
            products = [products[-1] if pick == "heavier" else products[0]]
        self.smiles = products[0]
        self.props = _Props(Molecule("product", self.smiles, "", "product"))
        self.product = reaction.product.format(pick=pick)

    def text(self, amount: str = "") -> str:
        a = f"{amount}{_ref(self.substrate)}"
        b = _ref(self.partner) if self.partner else ""
        return self.reaction.text.format(A=a[0].upper() + a[1:] if not amount else a, B=b)

    @property
    def molecules(self) -> list[Molecule]:
        return [self.substrate] + ([self.partner] if self.partner else [])


def _instances(named: dict[str, Molecule]) -> list[list[_Instance]]:
    """Every reaction's instances, in a fixed order (one list per reaction)."""
    out: list[list[_Instance]] = []
    for reaction in _REACTIONS:
        found = []
        for s in reaction.substrates:
            for p in reaction.partners or (None,):
                for pick in ("heavier", "lighter") if reaction.pick else (None,):
                    found.append(_Instance(reaction, named[s], named[p] if p else None, pick))
        out.append(found)
    return out


def _interleave(rng: random.Random, groups: list[list]) -> list:
    """Shuffle each group, then take one from each in turn: every reaction type is represented."""
    groups = [rng.sample(g, len(g)) for g in groups]
    out: list = []
    for i in range(max(len(g) for g in groups)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


# ---------------------------------------------------------------------------------------------
# The set


def _row(level, prop, answer_type, problem, gold, molecules, tolerance=None, unit=None, decimals=None,
         extra=None) -> dict[str, Any]:  # fmt: skip
    if tolerance is None and answer_type == "integer":
        tolerance = EXACT
    meta: dict[str, Any] = {
        "set": "cort_chem",
        "version": CHEM_VERSION,
        "grader": "chem",
        "domain": "chemistry",
        "level": level,
        "property": prop,
        "answer_type": answer_type,
        "tolerance": dict(tolerance) if tolerance is not None else None,  # None: compared exactly
    }
    if unit is not None:
        meta["unit"] = unit
    if decimals is not None:
        meta["decimals"] = decimals
    meta["molecules"] = [m.name for m in molecules]
    meta["smiles"] = [m.smiles for m in molecules]
    meta.update(extra or {})
    return {"problem": problem, "gt_answer": gold, "meta": meta}


def _easy(rng: random.Random, pool: list[Molecule], props: dict[str, _Props]) -> list[dict]:
    rows = []

    def pick(n: int, eligible) -> list[Molecule]:
        return rng.sample([m for m in pool if eligible(props[m.name])], n)

    for m in pick(12, lambda p: True):
        rows.append(_row("easy", "molar_mass", "number",
                         f"What is the molar mass (average molecular weight, from standard atomic weights) of "
                         f"{_ref(m)}? {_ask_number('g/mol', 2)}",
                         _fmt(props[m.name].mw, 2), [m], TOLERANCES["mw"], "g/mol", 2))  # fmt: skip
    for m in pick(6, lambda p: True):
        rows.append(_row("easy", "monoisotopic_mass", "number",
                         f"What is the monoisotopic mass (the mass of the molecule built from the most abundant "
                         f"isotope of each element) of {_ref(m)}? {_ask_number('daltons (Da)', 4)}",
                         _fmt(props[m.name].exact_mass, 4), [m], TOLERANCES["exact_mass"], "Da", 4))  # fmt: skip
    for m in pick(12, lambda p: True):
        rows.append(_row("easy", "formula", "formula", f"What is the molecular formula of {_ref(m)}? {_ASK['formula']}",
                         props[m.name].formula, [m]))  # fmt: skip
    simple = (
        ("heavy_atoms", 10, "How many heavy (non-hydrogen) atoms does {ref} have?", lambda p: True),
        ("rings", 8, "How many rings does {ref} have, counted as the smallest set of smallest rings (SSSR; for "
         "one connected molecule, the number of bonds minus the number of atoms plus 1)?", lambda p: p.rings > 0),
        ("aromatic_rings", 8, "How many aromatic rings does {ref} have (rings of the smallest set of smallest "
         "rings in which every atom is aromatic)?", lambda p: p.aromatic_clear and p.rings > 0),
        ("hbd", 8, "How many hydrogen-bond donors does {ref} have by Lipinski's rule-of-five definition, that "
         "is, how many hydrogen atoms are bonded to nitrogen or oxygen (an NH2 group counts 2)?", lambda p: True),
        ("hba", 8, "How many hydrogen-bond acceptors does {ref} have by Lipinski's rule-of-five definition, "
         "that is, how many nitrogen and oxygen atoms does it contain?", lambda p: True),
        ("rotatable_bonds", 10, "How many rotatable bonds does {ref} have? Count every single bond that is not "
         "in a ring, joins two non-hydrogen atoms that each have at least one other non-hydrogen neighbour, and "
         "does not touch an atom that is part of a triple bond (amide C-N bonds count).", lambda p: True),
    )  # fmt: skip
    for prop, n, question, eligible in simple:
        for m in pick(n, eligible):
            value = getattr(props[m.name], prop)
            rows.append(_row("easy", prop, "integer", question.format(ref=_ref(m)) + " " + _ASK["integer"],
                             str(value), [m]))  # fmt: skip
    for m in pick(10, lambda p: p.tpsa > 0):
        rows.append(_row("easy", "tpsa", "number", f"What is the {_TPSA} of {_ref(m)}? "
                         f"{_ask_number('square angstroms', 2)}",
                         _fmt(props[m.name].tpsa, 2), [m], TOLERANCES["tpsa"], "A^2", 2))  # fmt: skip
    for m in pick(10, lambda p: True):
        rows.append(_row("easy", "logp", "number", f"What is the {_LOGP} of {_ref(m)}? {_ask_number(None, 2)}",
                         _fmt(props[m.name].logp, 2), [m], TOLERANCES["logp"], None, 2))  # fmt: skip
    stereo = "How many tetrahedral stereocentres (stereogenic atoms, whether or not the SMILES specifies their " \
             "configuration) does {ref} have?"  # fmt: skip
    chosen = pick(7, lambda p: p.stereo_clear and p.stereocentres > 0)
    chosen += pick(3, lambda p: p.stereo_clear and p.stereocentres == 0 and p.heavy_atoms >= 8)
    for m in chosen:
        rows.append(_row("easy", "stereocentres", "integer", stereo.format(ref=_ref(m)) + " " + _ASK["integer"],
                         str(props[m.name].stereocentres), [m]))  # fmt: skip
    return rows


def _medium(rng: random.Random, pool: list[Molecule], props: dict[str, _Props]) -> list[dict]:
    rows = []
    compare = (
        ("logp", 8, _LOGP, 0.5),
        ("tpsa", 8, _TPSA, 10.0),
        ("mw", 6, "molar mass", 10.0),
    )
    for prop, n, phrase, margin in compare:
        for _ in range(n):
            extreme = rng.choice(("highest", "lowest"))
            while True:  # three molecules whose winner leads by a clear margin
                three = rng.sample(pool, 3)
                values = [getattr(props[m.name], prop) for m in three]
                ranked = sorted(values, reverse=extreme == "highest")
                if abs(ranked[0] - ranked[1]) >= margin:
                    break
            letter = "ABC"[values.index(ranked[0])]
            options = "; ".join(f"{letter_}: {_ref(m)}" for letter_, m in zip("ABC", three))
            rows.append(_row("medium", f"compare_{prop}", "choice",
                             f"Which of these three molecules has the {extreme} {phrase}? {options}. {_ASK['choice']}",
                             letter, three, extra={"choices": {x: m.name for x, m in zip("ABC", three)}}))  # fmt: skip
    for prop, n, phrase, unit in (("tpsa", 6, _TPSA, "square angstroms"), ("logp", 6, _LOGP, None)):
        for _ in range(n):
            while True:
                a, b = rng.sample(pool, 2)
                diff = getattr(props[a.name], prop) - getattr(props[b.name], prop)
                if abs(diff) >= 0.5:
                    break
            if diff < 0:
                a, b, diff = b, a, -diff
            rows.append(_row("medium", f"difference_{prop}", "number",
                             f"By how much does the {phrase} of {_ref(a)} exceed that of {_ref(b)}? "
                             f"{_ask_number(unit, 2)}",
                             _fmt(diff, 2), [a, b], TOLERANCES["difference"],
                             "A^2" if unit else None, 2))  # fmt: skip
    violators = [m for m in pool if props[m.name].lipinski > 0]
    others = [m for m in pool if props[m.name].lipinski == 0 and props[m.name].heavy_atoms >= 10]
    for m in rng.sample(violators, min(3, len(violators))) + rng.sample(others, 10 - min(3, len(violators))):
        rows.append(_row("medium", "lipinski_violations", "integer",
                         f"How many of Lipinski's rule-of-five criteria does {_ref(m)} violate? The criteria: molar "
                         "mass at most 500 g/mol; Wildman-Crippen logP at most 5; at most 5 hydrogen-bond donors "
                         "(hydrogen atoms on N or O); at most 10 hydrogen-bond acceptors (N and O atoms). Give the "
                         "number of violated criteria (0 to 4) as an integer.",
                         str(props[m.name].lipinski), [m]))  # fmt: skip
    for m in rng.sample([m for m in pool if props[m.name].heavy_atoms >= 3], 10):
        elements = sorted(el for el in props[m.name].counts if el in _ELEMENTS and el != "C") or ["C"]
        el = rng.choice(elements)
        rows.append(_row("medium", "mass_percent", "number",
                         f"What percentage of the mass of {_ref(m)} is {_ELEMENTS[el]}? Use standard atomic "
                         f"weights. {_ask_number('percent', 2)}",
                         _fmt(props[m.name].mass_percent[el], 2), [m], TOLERANCES["mass_percent"], "%", 2,
                         {"element": el}))  # fmt: skip
    eligible = [m for m in pool if set(props[m.name].counts) <= {"C", "H", "N", "O", "S", "F", "Cl"}]
    for m in rng.sample([m for m in eligible if props[m.name].unsaturation2 > 0], 8):
        rows.append(_row("medium", "unsaturation", "integer",
                         f"What is the degree of unsaturation (rings plus pi bonds) of {_ref(m)}, computed from its "
                         "molecular formula as C + 1 + N/2 - (H + X)/2, where X is the number of halogen atoms and "
                         f"O and S are ignored? {_ASK['integer']}",
                         str(props[m.name].unsaturation2 // 2), [m]))  # fmt: skip
    return rows


def _hard(rng: random.Random, named: dict[str, Molecule], props: dict[str, _Props]) -> list[dict]:
    rows = []
    queue = _interleave(rng, _instances(named))
    take = iter(queue)
    for _ in range(14):
        inst = next(take)
        rows.append(_row("hard", "reaction_formula", "formula",
                         f"{inst.text()} What is the molecular formula of {inst.product}? {_ASK['formula']}",
                         inst.props.formula, inst.molecules, extra=_rxn_meta(inst)))  # fmt: skip
    for _ in range(10):
        inst = next(take)
        rows.append(_row("hard", "reaction_molar_mass", "number",
                         f"{inst.text()} What is the molar mass of {inst.product}? {_ask_number('g/mol', 2)}",
                         _fmt(inst.props.mw, 2), inst.molecules, TOLERANCES["mw"], "g/mol", 2,
                         _rxn_meta(inst)))  # fmt: skip
    for _ in range(14):
        inst = next(take)
        rows.append(_row("hard", "reaction_smiles", "smiles",
                         f"{inst.text()} What is {inst.product}? {_ASK['smiles']}",
                         inst.smiles, inst.molecules, extra=_rxn_meta(inst)))  # fmt: skip
    # mass balances: the rest of the queue, yields and amounts drawn here
    howto = "Use standard atomic weights and do not round intermediate results."
    for _ in range(12):
        inst = next(take)
        grams, yield_ = rng.choice(_GRAMS), rng.choice(_YIELDS)
        mass = float(grams) / props[inst.substrate.name].mw * inst.props.mw * yield_ / 100
        rows.append(_row("hard", "product_mass", "number",
                         f"{inst.text(f'{grams} g of ')} {_cap(inst.product)} is isolated in {yield_}% yield. What "
                         f"mass of {inst.product} is obtained? {howto} {_ask_number('grams', 2)}",
                         _fmt(mass, 2), inst.molecules, TOLERANCES["grams"], "g", 2,
                         {**_rxn_meta(inst), "yield_percent": yield_}))  # fmt: skip
    for _ in range(6):
        inst = next(take)
        grams, yield_ = rng.choice(_GRAMS), rng.choice(_YIELDS)
        need = float(grams) / (inst.props.mw * yield_ / 100) * props[inst.substrate.name].mw
        rows.append(_row("hard", "reactant_mass", "number",
                         f"{inst.text()} The reaction gives {inst.product} in {yield_}% yield. How many grams of "
                         f"{inst.substrate.name} are needed to obtain {grams} g of {inst.product}? {howto} "
                         f"{_ask_number('grams', 2)}",
                         _fmt(need, 2), inst.molecules, TOLERANCES["grams"], "g", 2,
                         {**_rxn_meta(inst), "yield_percent": yield_}))  # fmt: skip
    for _ in range(6):
        inst = next(take)
        grams = rng.choice(_GRAMS)
        theory = float(grams) / props[inst.substrate.name].mw * inst.props.mw
        obtained = _fmt(theory * rng.randrange(55, 96) / 100, 2)
        rows.append(_row("hard", "percent_yield", "number",
                         f"{inst.text(f'{grams} g of ')} After purification, {obtained} g of {inst.product} is "
                         f"obtained. What is the percent yield? {howto} {_ask_number('percent', 1)}",
                         _fmt(100 * float(obtained) / theory, 1), inst.molecules, TOLERANCES["percent_yield"],
                         "%", 1, _rxn_meta(inst)))  # fmt: skip
    glucose, ethanol, co2, water = (
        named[n] for n in ("beta-D-glucose", "ethanol", "carbon dioxide", "water")
    )
    for _ in range(2):
        grams, yield_ = rng.choice(_GRAMS), rng.choice(_YIELDS)
        mass = float(grams) / props[glucose.name].mw * 2 * props[ethanol.name].mw * yield_ / 100
        rows.append(_row("hard", "fermentation_mass", "number",
                         f"Yeast ferments {grams} g of {_ref(glucose)} into {_ref(ethanol)} and {_ref(co2)} as the "
                         f"only products. The fermentation reaches {yield_}% of the theoretical yield of ethanol. "
                         f"What mass of ethanol is formed? {howto} {_ask_number('grams', 2)}",
                         _fmt(mass, 2), [glucose, ethanol, co2], TOLERANCES["grams"], "g", 2,
                         {"reaction": "alcoholic fermentation", "yield_percent": yield_}))  # fmt: skip
    fuels = [named[n] for n in ("methane", "propane", "octane", "hexane", "methanol", "ethanol", "toluene",
                                "cyclohexane", "beta-D-glucose", "1-butanol")]  # fmt: skip
    for fuel in rng.sample(fuels, 6):
        grams, target = rng.choice(_GRAMS), rng.choice((co2, water))
        per_mole = props[fuel.name].counts["C"] if target is co2 else props[fuel.name].counts["H"] / 2
        mass = float(grams) / props[fuel.name].mw * per_mole * props[target.name].mw
        rows.append(_row("hard", "combustion_mass", "number",
                         f"{grams} g of {_ref(fuel)} burns completely in excess oxygen to carbon dioxide and water. "
                         f"What mass of {target.name} is formed? {howto} {_ask_number('grams', 2)}",
                         _fmt(mass, 2), [fuel, target], TOLERANCES["grams"], "g", 2,
                         {"reaction": "complete combustion"}))  # fmt: skip
    return rows


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _rxn_meta(inst: _Instance) -> dict[str, Any]:
    return {"reaction": inst.reaction.name, "product_smiles": inst.smiles}


def generate(seed: int = CHEM_SEED, version: int = CHEM_VERSION) -> list[dict[str, Any]]:
    """The chemistry set: rows with `id`, `problem`, `gt_answer` and `meta` (answer type, tolerance,
    property, level, molecules, ...). Deterministic for a given seed, version and RDKit version."""
    if version != CHEM_VERSION:
        raise ValueError(f"only version {CHEM_VERSION} of the chemistry set is defined, not {version}")
    rdkit, _ = _rdkit()
    rng = random.Random(seed)
    named = {m.name: m for m in MOLECULES}
    pool = [m for m in MOLECULES if m.kind != "reagent"]
    props = {m.name: _Props(m) for m in MOLECULES}
    rows = _easy(rng, pool, props) + _medium(rng, pool, props) + _hard(rng, named, props)
    rng.shuffle(rows)  # `--limit n` then takes a mix of levels
    out = []
    for number, row in enumerate(rows, 1):
        row["meta"]["rdkit"] = rdkit.__version__
        out.append({"id": f"chem-v{version}-{number:04d}", **row})
    return out


def dumps(rows: list[dict[str, Any]]) -> str:
    """The jsonl text of the set: one row a line, keys in a fixed order, UTF-8 as is."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def compare(path: str | Path = DATA_FILE, seed: int = CHEM_SEED) -> tuple[str, list[str]]:
    """Regenerate the set and compare it with a file: ("identical", []); ("restamped", []) when they
    differ only in the RDKit version each row records; else ("different", ids of the differing rows)."""
    rows = generate(seed)
    text = Path(path).read_text(encoding="utf-8")
    if text == dumps(rows):
        return "identical", []
    lines = text.splitlines()
    recorded = json.loads(lines[0]).get("meta", {}).get("rdkit") if lines else None
    for row in rows:
        row["meta"]["rdkit"] = recorded
    if text == dumps(rows):
        return "restamped", []
    ours = dumps(rows).splitlines()
    ids = [row["id"] for row, a, b in zip(rows, ours, lines) if a != b]
    return "different", ids + [row["id"] for row in rows[len(lines) :]]


def write(path: str | Path = DATA_FILE, seed: int = CHEM_SEED) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(generate(seed)), encoding="utf-8")
    return path
