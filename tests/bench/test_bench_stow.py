"""The STOW-RS row: several samples, each of instances the server does not hold yet, against a
real ``archivist serve`` over HTTP."""

from pathlib import Path

import pytest
from bench.corpus import STOW_SAMPLES, CorpusSpec, load_or_generate
from bench.results import OK
from bench.run import Bench, parse_args
from bench.targets import ArchivistTarget

SMALL = CorpusSpec(ct_studies=1, ct_series=2, ct_per_series=3, tiny_studies=1, tiny_per_study=1,
                   big_mb=1)


def test_samples_default_to_three_and_are_bounded() -> None:
    assert parse_args([]).stow_samples is None
    assert Bench(parse_args(["--quick"])).plan.stow_samples == 3
    assert Bench(parse_args(["--stow-samples", "5"])).plan.stow_samples == 5
    for bad in ("0", str(STOW_SAMPLES + 1)):
        with pytest.raises(SystemExit):
            parse_args(["--stow-samples", bad])


@pytest.mark.parametrize(("argv", "spread"), [
    (["--quick"], [[0, 1, 2]]),
    ([], [[0], [1], [2]]),
    (["--reps", "2"], [[0, 1], [2]]),
    (["--reps", "5"], [[0], [1], [2], [], []]),
    (["--stow-samples", "5"], [[0, 1], [2, 3], [4]]),
])
def test_samples_are_spread_over_the_repetitions(argv: list[str],
                                                  spread: list[list[int]]) -> None:
    """The targets take turns in each repetition: samples spread over them see the load of
    other work as the ingest rows do."""
    bench = Bench(parse_args(argv))
    assert [list(bench.stow_samples_in(rep)) for rep in range(bench.plan.reps)] == spread


def test_every_sample_stores_new_instances_and_the_row_is_their_median(tmp_path: Path) -> None:
    bench = Bench(parse_args(["--workdir", str(tmp_path / "work"), "--stow-samples", "3"]))
    bench.corpus = load_or_generate(tmp_path / "cache", SMALL, sets=("stow",), workers=1,
                                    log=lambda m: None)
    bench.plan.stow_batch = 4  # 6 instances: requests of 4 and 2
    target = ArchivistTarget()
    target.prepare(tmp_path / "archivist", peer_port=1)
    target.start()
    try:
        bench.stow_row(target, target.dicomweb_root or "", range(3))
        stored = target.stored_count()
    finally:
        target.stop()
    rec = bench.results.find("dicomweb", "stow_rs_batch25", target.name)
    assert rec is not None and rec.status == OK
    assert len(rec.values) == 3 and all(v > 0 for v in rec.values)
    assert rec.summary is not None and rec.summary.median == sorted(rec.values)[1]
    assert rec.detail["stored/expected"] == ["6/6"] * 3
    assert rec.detail["requests"] == 2
    assert rec.detail["sample"] == [1, 2, 3]
    assert len(rec.detail["server_cpu_ms_per_instance"]) == 3
    assert stored == 18  # no sample was answered as a duplicate of another


def test_ab_stow_rounds_interleave_new_instances_over_real_servers(tmp_path: Path) -> None:
    """``python -m bench.ab stow``: every round stores new instances in every variant, each
    variant's rate and CPU per instance, and its ratios to the first variant's."""
    from bench.ab import parse_variant, start_empty, stow_rounds, stow_table

    files = load_or_generate(tmp_path / "cache", SMALL, sets=("stow",), workers=1,
                             log=lambda m: None).paths("stow")
    targets = []
    try:
        for text in ("one=archivist", "two=archivist::1"):
            targets.append(start_empty(tmp_path / "ab", parse_variant(text)))
        results = stow_rounds(targets, files, rounds=2, batch=4)
        stored = [t.stored_count() for t in targets]
    finally:
        for t in targets:
            t.stop()
            t.cleanup()
    assert stored == [12, 12]
    assert {name: [len(v) for v in r.values()] for name, r in results.items()} == {
        "one": [2, 2, 2], "two": [2, 2, 2]}
    assert all(x > 0 for r in results.values() for v in r.values() for x in v)
    table = stow_table(results)
    assert "| one |" in table and "| two |" in table and "2 rounds" in table
    with pytest.raises(ValueError):
        stow_rounds(targets, files, rounds=STOW_SAMPLES)
