"""The chemistry set (cort_chem): real molecules, a reproducible set, a grader that is right about
answers written in many ways, loading without RDKit, and `cortbench run` end to end."""

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from cortbench.analyzers.chem import (
    CHEM_ANSWER_TYPES,
    answer_key,
    grade_chem,
    parse_formula,
    parse_number,
)
from cortbench.tasks import cort_chem
from cortbench.tasks.chem_molecules import CIP, INCHIKEYS, MOLECULES
from cortbench.tasks.loading import load_problems
from cortbench.tasks.registry import get_task

try:
    import rdkit  # noqa: F401

    HAVE_RDKIT = True
except ImportError:
    HAVE_RDKIT = False
needs_rdkit = pytest.mark.skipif(
    not HAVE_RDKIT, reason="RDKit is not installed (pip install 'cortbench[chem]')"
)


def _rows() -> list[dict]:
    return [json.loads(line) for line in cort_chem.DATA_FILE.read_text(encoding="utf-8").splitlines()]


def _meta(answer_type: str, **extra) -> dict:
    return {"grader": "chem", "answer_type": answer_type, **extra}


def _cortbench(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cortbench.harness.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The molecules


@needs_rdkit
def test_every_molecule_is_the_named_one():
    from rdkit import Chem
    from rdkit.Chem import rdCIPLabeler, rdMolDescriptors

    assert len({m.name for m in MOLECULES}) == len(MOLECULES)
    assert sum(m.kind != "reagent" for m in MOLECULES) >= 60
    canonical = set()
    for m in MOLECULES:
        mol = Chem.MolFromSmiles(m.smiles)
        assert mol is not None, m.name
        assert rdMolDescriptors.CalcMolFormula(mol) == m.formula, m.name
        canonical.add(Chem.MolToSmiles(mol))
        if m.name in CIP:
            rdCIPLabeler.AssignCIPLabels(mol)
            labels = tuple(a.GetProp("_CIPCode") for a in mol.GetAtoms() if a.HasProp("_CIPCode"))
            assert labels == CIP[m.name], m.name
        if m.name in INCHIKEYS and hasattr(Chem, "MolToInchiKey") and Chem.MolToInchiKey(mol):
            assert Chem.MolToInchiKey(mol) == INCHIKEYS[m.name], m.name
    assert len(canonical) == len(MOLECULES)  # no structure listed twice under two names


# ---------------------------------------------------------------------------------------------
# The set


def test_the_shipped_set_has_every_level_type_and_its_metadata():
    rows = _rows()
    assert len(rows) == cort_chem.CHEM_SIZE >= 200
    assert [r["id"] for r in rows] == [f"chem-v1-{i:04d}" for i in range(1, len(rows) + 1)]
    assert len({r["problem"] for r in rows}) == len(rows)
    metas = [r["meta"] for r in rows]
    assert set(Counter(m["level"] for m in metas)) == set(cort_chem.LEVELS)
    assert set(Counter(m["answer_type"] for m in metas)) == set(cort_chem.ANSWER_TYPES) == CHEM_ANSWER_TYPES
    assert min(Counter(m["level"] for m in metas).values()) >= 40
    for row, meta in zip(rows, metas):
        assert (
            meta["grader"] == "chem"
            and meta["answer_type"] in CHEM_ANSWER_TYPES
            and meta["version"] == cort_chem.CHEM_VERSION
            and meta["rdkit"]
        )
        assert meta["molecules"] and len(meta["molecules"]) == len(meta["smiles"]) and meta["property"]
        assert "SMILES: " in row["problem"] and "\\boxed" not in row["problem"]
        if meta["answer_type"] == "number":
            assert set(meta["tolerance"]) == {"abs", "rel"} and meta["tolerance"]["abs"] > 0
            assert len(row["gt_answer"].split(".")[1]) == meta["decimals"]
            assert f"rounded to {meta['decimals']} decimal places" in row["problem"]
        elif meta["answer_type"] == "integer":
            assert meta["tolerance"] == {"abs": 0.0, "rel": 0.0} and row["gt_answer"].lstrip("-").isdigit()
        elif meta["answer_type"] == "choice":
            assert row["gt_answer"] in meta["choices"] and set(meta["choices"]) == {"A", "B", "C"}
        else:
            assert meta["tolerance"] is None


def test_loading_through_the_registry_keeps_the_metadata():
    spec = get_task("cort_chem")
    assert (spec.label, spec.size, spec.answer_type, spec.protocol.k) == (
        "Chem",
        cort_chem.CHEM_SIZE,
        "mixed",
        4,
    )
    problems = load_problems(spec)
    assert len(problems) == cort_chem.CHEM_SIZE
    first = problems[0]
    assert first.problem_id == "chem-v1-0001" and first.task == "cort_chem"
    assert {"answer_type", "tolerance", "property", "level", "molecules"} <= set(first.meta)


def test_loading_and_grading_need_no_rdkit():
    """Loading and grading numbers, integers, formulas and choices never import RDKit; grading a SMILES
    answer where RDKit cannot be imported counts it wrong with a clear grading_error."""
    code = (
        "import sys\n"
        "from cortbench.tasks.registry import get_task\n"
        "from cortbench.tasks.loading import load_problems\n"
        "from cortbench.analyzers.chem import grade_chem\n"
        "problems = load_problems(get_task('cort_chem'))\n"
        "others = [p for p in problems if p.meta['answer_type'] != 'smiles']\n"
        "assert all(grade_chem(p.gold, '\\\\boxed{' + p.gold + '}', p.meta).correct for p in others)\n"
        "assert 'rdkit' not in sys.modules\n"
        "sys.modules['rdkit'] = None  # now any import of rdkit fails\n"
        "smiles = [p for p in problems if p.meta['answer_type'] == 'smiles']\n"
        "graded = [grade_chem(p.gold, '\\\\boxed{' + p.gold + '}', p.meta) for p in smiles]\n"
        "assert smiles and all(not g.correct and g.grading_error == 'needs rdkit' for g in graded)\n"
        "print(len(problems))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(cort_chem.CHEM_SIZE)


@needs_rdkit
def test_generation_is_reproducible_byte_for_byte(tmp_path):
    """The shipped file is what the generator writes, whatever the hash seed (two fresh processes).
    With another RDKit version than the one the file records, only that stamp may differ."""
    import rdkit

    shipped = cort_chem.DATA_FILE.read_bytes()
    recorded = _rows()[0]["meta"]["rdkit"]
    digests = set()
    for hash_seed in ("1", "12345"):
        out = tmp_path / f"chem_{hash_seed}.jsonl"
        done = _cortbench("chem-generate", "--out", str(out), env={"PYTHONHASHSEED": hash_seed})
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1
    status, differing = cort_chem.compare()
    if rdkit.__version__ == recorded:
        assert hashlib.sha256(shipped).hexdigest() in digests and status == "identical"
    elif status == "different":
        pytest.skip(f"RDKit {rdkit.__version__} gives other answers than {recorded} in rows {differing[:10]}")
    else:
        assert status == "restamped"
    check = _cortbench("chem-generate", "--check")
    assert check.returncode == 0 and "identical" in check.stdout
    with pytest.raises(ValueError, match="only version 1"):
        cort_chem.generate(version=2)


# ---------------------------------------------------------------------------------------------
# Grading


def test_every_gold_answer_grades_correct_against_itself():
    for row in _rows():
        meta = row["meta"]
        grade = grade_chem(row["gt_answer"], f"So the answer is \\boxed{{{row['gt_answer']}}}.", meta)
        if meta["answer_type"] == "smiles" and not HAVE_RDKIT:
            assert grade.grading_error == "needs rdkit" and not grade.correct
            continue
        assert grade.correct and grade.grading_error is None, (row["id"], grade)
        assert grade.extracted == row["gt_answer"]


MW = _meta("number", tolerance=cort_chem.TOLERANCES["mw"])
GRAMS = _meta("number", tolerance=cort_chem.TOLERANCES["grams"])
LOGP = _meta("number", tolerance=cort_chem.TOLERANCES["logp"])


@pytest.mark.parametrize(
    ("gold", "answer", "meta", "correct"),
    [
        ("180.16", "180.16", MW, True),
        ("180.16", "180.159", MW, True),  # unrounded
        ("180.16", "180.17", MW, True),  # another atomic-weight table
        ("180.16", "180.042", MW, False),  # the monoisotopic mass
        ("180.16", "180", MW, False),  # nominal mass
        ("180.16", "180.16 g/mol", MW, True),
        ("180.16", "180.16\\ \\text{g mol}^{-1}", MW, True),
        ("180.16", "M = 180.16\\,\\mathrm{g\\,mol^{-1}}", MW, True),
        ("180.16", "1.8016e2", MW, True),
        ("180.16", "1.8016 \\times 10^{2}", MW, True),
        ("180.16", "\\approx 180.16", MW, True),
        ("1.31", "1.30", LOGP, True),  # rounded on the other side of a half
        ("1.31", "1.29", LOGP, False),
        ("-3.22", "-3.22", LOGP, True),
        ("-3.22", "3.22", LOGP, False),
        ("47.50", "47.55", GRAMS, True),  # 0.2% relative
        ("47.50", "47.70", GRAMS, False),
        ("47.50", "47.50\\text{ g}", GRAMS, True),
        ("3", "3", _meta("integer"), True),
        ("3", "3.0", _meta("integer"), True),
        ("3", "three", _meta("integer"), True),
        ("3", "4", _meta("integer"), False),
        ("3", "3.5", _meta("integer"), False),
        ("C9H8O4", "C9H8O4", _meta("formula"), True),
        ("C9H8O4", "C_{9}H_{8}O_{4}", _meta("formula"), True),
        ("C9H8O4", "\\mathrm{C_9H_8O_4}", _meta("formula"), True),
        ("C9H8O4", "H8C9O4", _meta("formula"), True),
        ("C9H8O4", "C₉H₈O₄", _meta("formula"), True),
        ("C4H10O", "CH3(CH2)3OH", _meta("formula"), True),
        ("C9H8O4", "C9H8O4^{-}", _meta("formula"), False),
        ("C9H8O4", "C9H10O4", _meta("formula"), False),
        ("C9H8O4", "aspirin", _meta("formula"), False),
        ("B", "B", _meta("choice", choices={"A": "ethanol", "B": "aspirin", "C": "toluene"}), True),
        ("B", "(B)", _meta("choice", choices={"A": "ethanol", "B": "aspirin", "C": "toluene"}), True),
        (
            "B",
            "\\text{B: aspirin}",
            _meta("choice", choices={"A": "ethanol", "B": "aspirin", "C": "toluene"}),
            True,
        ),
        ("B", "Aspirin", _meta("choice", choices={"A": "ethanol", "B": "aspirin", "C": "toluene"}), True),
        ("B", "A", _meta("choice", choices={"A": "ethanol", "B": "aspirin", "C": "toluene"}), False),
        ("B", "A or B", _meta("choice", choices={"A": "ethanol", "B": "aspirin", "C": "toluene"}), False),
        ("B", "toluene", _meta("choice", choices={"A": "ethanol", "B": "aspirin", "C": "toluene"}), False),
    ],
)
def test_answers_written_in_many_ways(gold, answer, meta, correct):
    grade = grade_chem(gold, f"Thus the result is $\\boxed{{{answer}}}$.", meta)
    assert (grade.correct, grade.grading_error) == (correct, None), grade


@needs_rdkit
@pytest.mark.parametrize(
    ("gold", "answer", "correct"),
    [
        ("CC(=O)Oc1ccccc1C(=O)O", "OC(=O)c1ccccc1OC(C)=O", True),  # another atom order
        ("CC(=O)Oc1ccccc1C(=O)O", "CC(=O)OC1=CC=CC=C1C(=O)O", True),  # Kekulé form
        ("CC(=O)Oc1ccccc1C(=O)O", "\\text{CC(=O)Oc1ccccc1C(=O)O}", True),
        ("CC(=O)Oc1ccccc1C(=O)O", "CC(=O)Oc1ccccc1", False),
        ("CC(=O)Oc1ccccc1C(=O)O", "CC(=O)Oc1ccccc1C(=O)O.O", False),  # water is not the product
        ("CC(=O)Oc1ccccc1C(=O)O", "not a smiles", False),
        ("OC/C=C/c1ccccc1", "c1ccccc1/C=C/CO", True),  # the same (E) isomer
        ("OC/C=C/c1ccccc1", "OC/C=C\\c1ccccc1", False),  # (Z)
        ("OC/C=C/c1ccccc1", "OCC=Cc1ccccc1", False),  # the stereo the reactant gave is dropped
        ("CC(O)c1ccccc1", "C[C@H](O)c1ccccc1", True),  # gold without stereo: any stereo passes
        ("C#N", "N\\#C", True),  # LaTeX-escaped triple bond
    ],
)
def test_smiles_are_compared_as_molecules(gold, answer, correct):
    grade = grade_chem(gold, f"\\boxed{{{answer}}}", _meta("smiles"))
    assert (grade.correct, grade.grading_error) == (correct, None), grade


def test_missing_or_broken_answers_are_wrong_and_nothing_raises():
    assert grade_chem("180.16", "The molar mass is 180.16 g/mol.", MW) == grade_chem("180.16", "", MW)
    assert grade_chem("180.16", "no box", MW).extracted is None
    assert grade_chem("180.16", "\\boxed{180.16", MW).correct is False
    assert grade_chem(
        "180.16", "\\boxed{1}\\boxed{\\text{{180.16}}}", MW
    ).correct  # the last box, nested braces
    assert grade_chem("180.16", "\\boxed{180.16} then \\boxed{200}", MW).correct is False
    assert grade_chem("180.16", None, MW).correct is False  # type: ignore[arg-type]
    weird = grade_chem("x", "\\boxed{1}", MW)
    assert not weird.correct and weird.grading_error == "the gold answer is not a number"
    unknown = grade_chem("1", "\\boxed{1}", _meta("essay"))
    assert not unknown.correct and "unknown answer_type" in unknown.grading_error
    assert grade_chem("1", "\\boxed{1}", {"answer_type": "number", "tolerance": {"abs": "?"}}).grading_error
    assert (
        parse_number("1,234.5 g") == 1234.5
        and parse_number("\\frac{1}{4}") == 0.25
        and parse_number("g") is None
    )
    assert parse_formula("SO4^{2-}") == ({"O": 4, "S": 1}, -2) and parse_formula("NH4+") == (
        {"H": 4, "N": 1},
        1,
    )


def test_equivalent_answers_share_a_key_for_majority_votes():
    number = _meta("number", decimals=2)
    assert answer_key("180.159 g/mol", number) == answer_key("\\approx 180.16", number) == "180.16"
    assert answer_key("3.0", _meta("integer")) == "3" and answer_key("3.5", _meta("integer")) is None
    assert (
        answer_key("H8C9O4", _meta("formula")) == answer_key("C_{9}H_{8}O_{4}", _meta("formula")) == "C9H8O4"
    )
    assert (
        answer_key("NH4+", _meta("formula")) == "H4N+" and answer_key("SO4^{2-}", _meta("formula")) == "O4S2-"
    )
    choice = _meta("choice", choices={"A": "ethanol", "B": "aspirin", "C": "toluene"})
    assert answer_key("aspirin", choice) == answer_key("(B)", choice) == "B"
    assert answer_key(None, number) is None and answer_key("no number", number) is None
    if HAVE_RDKIT:
        smiles = _meta("smiles")
        assert answer_key("OC(=O)c1ccccc1OC(C)=O", smiles) == answer_key("CC(=O)Oc1ccccc1C(=O)O", smiles)


def test_the_task_names_its_scorer_and_records_carry_it():
    """Scoring dispatches on the scorer the task declares, never on metadata: an OlympiadBench row's
    `answer_type` does not make it chemistry; a record from elsewhere takes its task's scorer."""
    from cortbench.analyzers.scorers import is_chemistry, scorer_of
    from cortbench.harness.records import TrajectoryRecord

    assert get_task("cort_chem").scorer == "chem" and get_task("olympiad_bench").scorer == "math-verify"

    def record(task, scorer=None, meta=None):
        return TrajectoryRecord(task, "0", 0, "p", "g", "stop", problem_meta=meta or {}, scorer=scorer)

    assert scorer_of(record("olympiad_bench", meta={"answer_type": "Numerical"})) == "math-verify"
    assert scorer_of(record("cort_chem")) == "chem" and is_chemistry(record("cort_chem"))
    assert scorer_of(record("my_own_task")) == "math-verify" and not is_chemistry(record("my_own_task"))
    assert scorer_of(record("my_own_task", scorer="chem")) == "chem"
    old = record("cort_chem", meta={"grader": "chem", "answer_type": "number"}).to_dict()
    old.update(schema_version=1, task="renamed_chem", scorer=None)  # version 1 had no scorer field
    assert TrajectoryRecord.from_dict(old).scorer == "chem"


# ---------------------------------------------------------------------------------------------
# End to end


def test_cortbench_run_on_the_chemistry_set(tiny_model_dir, tmp_path):
    out = str(tmp_path / "run")
    done = _cortbench("run", "--tasks", "cort_chem", "--backend", "hf", "--model", tiny_model_dir, "--n", "1",
                      "--limit", "2", "--hint", "code", "--max-tokens", "160", "--max-tool-calls", "2", "-o", out,
                      timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in open(os.path.join(out, "samples.jsonl"))]
    assert sorted(r["problem_id"] for r in records) == ["chem-v1-0001", "chem-v1-0002"]
    shipped = {r["id"]: r for r in _rows()}
    for record in records:
        meta = record["problem_meta"]
        assert meta == shipped[record["problem_id"]]["meta"] and record["task"] == "cort_chem"
        assert "answer_type" in meta and "tolerance" in meta and record["scorer"] == "chem"
        assert record["gold"] == shipped[record["problem_id"]]["gt_answer"]
        grade = grade_chem(record["gold"], record["generation"], meta)
        assert grade.grading_error is None
