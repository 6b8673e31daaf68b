"""The same seed gives the same metrics and samples, byte for byte; another seed does not. (That another
process gives the same bytes too, test_interrupted.py shows: killed processes and in-process runs agree.)"""

from conftest import ROOT, write_words
from mmjax import cli

RUN = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--no-progress", "--max-steps", "20",
       "--eval-every", "20", "--log-every", "10"]


def test_same_seed_same_metrics_and_samples_another_seed_differs(tmp_path, capsys):
    words = write_words(tmp_path / "words.txt")
    train = lambda seed, name: ["-i", str(words), "-o", str(tmp_path / name), "--seed", str(seed), *RUN]
    for seed, name in ((1, "a"), (1, "b"), (2, "c")):
        cli.train_main(cli.train_parser().parse_args(train(seed, name)))
    metrics = {name: (tmp_path / name / "metrics.jsonl").read_bytes() for name in "abc"}
    assert metrics["a"] == metrics["b"] != metrics["c"]
    samples = {}
    for name in "abc":
        capsys.readouterr()
        cli.sample_main(cli.sample_parser().parse_args(["-o", str(tmp_path / name), "-n", "40",
                                                        "--out", str(tmp_path / f"{name}.txt")]))
        samples[name] = capsys.readouterr().out, (tmp_path / f"{name}.txt").read_bytes()
    assert samples["a"] == samples["b"] and samples["a"][1] != samples["c"][1]
    assert len(samples["a"][1].splitlines()) == 40
