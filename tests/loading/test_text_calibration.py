"""--data text.txt for a language model: tokenised with its own tokenizer (the Hugging Face folder's,
a bundle's hf/, or --tokenizer), cut into seeded windows, the same bytes on a second run; token-id
tensors work too; text without a tokenizer, or shorter than one window, is one line and exit 3."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import prunectl
from prunectl.cli import cli
from prunectl.errors import SpecError
from prunectl.loading.text_data import load_calibration
from prunectl.loading.tokenizer import find_tokenizer
from tests.support.text_models import ARGS, FACTORY, llama_folder, tiny_llama, words

pytest.importorskip("transformers")


def _text(tmp_path: Path, count: int = 3000, name: str = "text.txt") -> Path:
    path = tmp_path / name
    path.write_text(words(count), encoding="utf-8")
    return path


def test_text_becomes_seeded_windows_of_the_model_tokenizer_ids(tmp_path: Path) -> None:
    folder = llama_folder(tmp_path / "folder")
    text = _text(tmp_path)
    tokenizer = find_tokenizer(None, folder)
    model = tiny_llama()
    data = load_calibration(text, model, tokenizer, seq_len=16, tokens=256, seed=3)
    ids = torch.cat([x for x, _ in data.batches])
    assert ids.shape == (16, 16) and ids.dtype == torch.int64
    expected = [int(w[1:]) for w in text.read_text().split()]
    boundaries = [expected[s:s + 16] for s in range(0, len(expected) - 15, 16)]
    assert all(row in boundaries for row in ids.tolist())  # runs of the file's tokens, cut at window boundaries
    again = torch.cat([x for x, _ in load_calibration(text, model, tokenizer, 16, 256, 3).batches])
    other = torch.cat([x for x, _ in load_calibration(text, model, tokenizer, 16, 256, 4).batches])
    assert torch.equal(ids, again) and not torch.equal(ids, other)
    assert data.details == {"file": str(text), "tokenizer": str(folder / "tokenizer.json"), "seq_len": 16,
                            "windows": 16, "tokens": 256, "seed": 3}
    assert data.has_targets  # next-token loss: taylor works on text
    assert data.loss(model(ids[:2]), ids[:2]).item() == pytest.approx(model(ids[:2], labels=ids[:2]).loss.item(),
                                                                        rel=1e-5)


def test_pruning_a_folder_with_text_data_is_deterministic_and_records_the_windows(tmp_path: Path) -> None:
    folder = llama_folder(tmp_path / "folder")
    text = _text(tmp_path)
    outputs = []
    for run in ("a", "b"):
        result = prunectl.prune(folder, prunectl.PruneOptions(criterion="activation", rate=0.3, data=str(text),
                                                              calib_seq_len=32, calib_tokens=512,
                                                              output=tmp_path / run))
        outputs.append(tmp_path / run)
    assert result.manifest.extra["calibration"]["windows"] == 16
    verify = result.manifest.extra["verify"]
    assert verify["soft_vs_hard_max_abs"] <= verify["tolerance"] * max(1.0, verify["reference_max_abs"])
    assert verify["data_inputs"] == 1  # a calibration window is one of the proof's inputs
    for name in ("model.safetensors", "manifest.json", "report.json"):
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name
    # the bundle's hf/ carries the tokenizer: text data works on the bundle without --tokenizer
    again = prunectl.prune(outputs[0], prunectl.PruneOptions(criterion="activation", rate=0.2, data=str(text),
                                                             calib_seq_len=32, calib_tokens=256))
    assert again.manifest.extra["calibration"]["tokenizer"] == str(outputs[0] / "hf" / "tokenizer.json")


def test_token_id_tensors_and_tokenizer_option_work_for_a_pt_checkpoint(tmp_path: Path) -> None:
    model = tiny_llama()
    checkpoint = tmp_path / "llm.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": FACTORY, "args": ARGS}}, checkpoint)
    ids = torch.randint(0, ARGS["vocab_size"], (8, 24), generator=torch.Generator().manual_seed(0))
    torch.save(ids, tmp_path / "ids.pt")
    from_ids = prunectl.prune(checkpoint, prunectl.PruneOptions(criterion="wanda_sp", rate=0.3,
                                                                data=str(tmp_path / "ids.pt")))
    assert from_ids.report["params"]["after"] < from_ids.report["params"]["before"]
    folder = llama_folder(tmp_path / "tok", model)
    from_text = prunectl.prune(checkpoint, prunectl.PruneOptions(criterion="wanda_sp", rate=0.3,
                                                                 data=str(_text(tmp_path)), calib_seq_len=16,
                                                                 tokenizer=str(folder / "tokenizer.json")))
    assert from_text.manifest.extra["calibration"]["tokens"] == 3000 // 16 * 16  # fewer than asked: all of it


def test_bad_text_data_is_one_line_exit_3_and_nothing_written(tmp_path: Path) -> None:
    model = tiny_llama()
    checkpoint = tmp_path / "llm.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": FACTORY, "args": ARGS}}, checkpoint)
    text = _text(tmp_path)
    with pytest.raises(SpecError, match="needs the model's tokenizer"):
        prunectl.prune(checkpoint, prunectl.PruneOptions(criterion="activation", data=str(text)))
    folder = llama_folder(tmp_path / "folder", model)
    short = _text(tmp_path, 20, "short.txt")
    runner = CliRunner()
    for args, message in (
            ([str(checkpoint), "--data", str(text)], f"--data {text}: text needs the model's tokenizer"),
            ([str(folder), "--data", str(short)], f"--data {short}: 20 tokens, fewer than one window of 128"),
            ([str(folder), "--data", str(text), "--calib-seq-len", "1"], "--calib-seq-len: expected an integer >= 2")):
        result = runner.invoke(cli, ["prune", *args, "--criterion", "activation", "-o", str(tmp_path / "out")])
        assert result.exit_code == 3, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.output
        assert not (tmp_path / "out").exists()


def test_an_in_memory_model_takes_text_with_a_tokenizer_object(tmp_path: Path) -> None:
    from tests.support.text_models import word_tokenizer

    result = prunectl.prune(tiny_llama(), example_inputs=torch.randint(0, ARGS["vocab_size"], (1, 16)),
                            criterion="activation", rate=0.3, data=str(_text(tmp_path)), calib_seq_len=16,
                            calib_tokens=128, tokenizer=word_tokenizer(), model=FACTORY, factory_args=ARGS)
    assert result.manifest.extra["calibration"]["tokenizer"] == "tokenizers.Tokenizer"
    assert result.report["params"]["after"] < result.report["params"]["before"]


def test_taylor_differentiates_the_next_token_loss_of_text(tmp_path: Path) -> None:
    folder = llama_folder(tmp_path / "folder")
    result = prunectl.prune(folder, prunectl.PruneOptions(criterion="taylor", rate=0, rate_mlp=0.5,
                                                          data=str(_text(tmp_path)), calib_seq_len=32,
                                                          calib_tokens=256))
    verify = result.manifest.extra["verify"]
    assert verify["soft_vs_hard_max_abs"] <= verify["tolerance"] * max(1.0, verify["reference_max_abs"])
    assert result.model.model.layers[0].mlp.up_proj.out_features == ARGS["intermediate_size"] // 2


def test_a_tokenizer_whose_ids_the_model_does_not_embed_is_refused(tmp_path: Path) -> None:
    from tests.support.text_models import word_tokenizer

    text = tmp_path / "wide.txt"
    text.write_text(words(400, vocab_size=200), encoding="utf-8")
    with pytest.raises(SpecError, match=f"--data {text}: tokenizer .* gives token id 19[0-9], but the model embeds "
                                        "128 ids: not the model's tokenizer") as caught:
        load_calibration(text, tiny_llama(), find_tokenizer(word_tokenizer(200), None), seq_len=16)
    assert caught.value.exit_code == 3


def test_drop_layers_measures_block_influence_on_the_calibration_text(tmp_path: Path) -> None:
    from prunectl.selection.depth import block_influence

    model = tiny_llama(num_hidden_layers=3)
    folder = llama_folder(tmp_path / "folder", model)
    text = _text(tmp_path)
    result = prunectl.prune(folder, prunectl.PruneOptions(rate=0.2, drop_layers=1, data=str(text), calib_seq_len=32,
                                                          calib_tokens=256))
    windows = [ids for ids, _ in load_calibration(text, model, find_tokenizer(None, folder), 32, 256).batches]
    expected = block_influence(model, windows)
    assert result.manifest.extra["drop_layers"]["block_influence"] == pytest.approx(expected, abs=1e-6)  # rounded
