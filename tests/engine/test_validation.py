"""The parameter checks every chapter runs first: paths, revisions and backbones, numbers."""

import math
import os
from pathlib import Path

import numpy as np
import pytest

from lhlib.engine.settings import DEFAULT_BACKBONE, OFFLINE_BACKBONE, check_backbone, check_revision
from lhlib.engine.validation import check_device, check_float, check_output_dir


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_floats_refuse_nan_and_infinities(value):
    with pytest.raises(ValueError, match=r"^lr must be a finite number"):
        check_float("lr", value, minimum=0.0)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_names_accepted(device):
    assert check_device("device", device) == device


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:0 ", "", None, 0])
def test_device_names_refused(device):
    with pytest.raises(ValueError, match=r"^device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got"):
        check_device("device", device)


def test_output_dir_is_normalised_and_may_be_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_output_dir("output_dir", "results/./paper//04") == os.path.join("results", "paper", "04")
    assert check_output_dir("output_dir", "results/x/../y") == os.path.join("results", "y")
    assert check_output_dir("output_dir", str(tmp_path / "drive" / "book")) == str(tmp_path / "drive" / "book")


def test_output_dir_is_refused_where_this_user_cannot_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "locked").mkdir()
    # os.access stands in for a read-only folder: as root (CI's containers) every folder is writable.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path).name != "locked")
    with pytest.raises(
        ValueError, match=r"^output_dir must be a folder this user can write, but '.*locked' is read-only"
    ):
        check_output_dir("output_dir", "locked/results/04")
    assert check_output_dir("output_dir", "open/results") == os.path.join("open", "results")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must be a non-empty folder path"),
        ("   ", "must be a non-empty folder path"),
        (None, "must be a non-empty folder path"),
        (3, "must be a non-empty folder path"),
        (".", "not the working directory itself"),
        ("results/..", "not the working directory itself"),
        ("..", "stay inside the working directory"),
        ("../", "stay inside the working directory"),
        ("../../x", "stay inside the working directory"),
        ("results/../../x", "stay inside the working directory"),
        ("chapters", "must not be a folder holding notebooks"),
        ("chapters/../chapters", "must not be a folder holding notebooks"),
        ("a_file", "is a file"),
        ("results/\0x", "must not hold a NUL character"),
        ("r" * 256, "names of at most 255 bytes"),
        ("/".join(["r" * 200] * 21), "4096 in all"),
    ],
)
def test_output_dir_refuses_paths_that_escape_or_overwrite(tmp_path, monkeypatch, value, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters" / "01.ipynb").write_text("{}")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match=rf"^output_dir .*{message}"):
        check_output_dir("output_dir", value)


@pytest.mark.parametrize(
    "revision", ["main", "v1.0", "refs/pr/1", "a" * 40, "0123456789abcdef0123456789abcdef01234567"]
)
def test_revisions_accepted(revision):
    assert check_revision(revision) == revision


@pytest.mark.parametrize(
    "revision", ["", "../../../../etc/hostname", "/etc/hostname", "main/../x", "a b", "main\n", ".hidden", 7, None]
)
def test_revisions_refused(revision):
    with pytest.raises(ValueError, match=r"^revision must be a commit hash"):
        check_revision(revision)


def test_backbones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_backbone(OFFLINE_BACKBONE) == OFFLINE_BACKBONE
    assert check_backbone(DEFAULT_BACKBONE) == DEFAULT_BACKBONE
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "config.json").write_text("{}")
    assert check_backbone("checkpoint") == "checkpoint"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd.json").write_text("{}")
    for bad in ["etc", "../../etc", "/etc", "", "google/..", "../vit", 3]:
        with pytest.raises(ValueError, match=r"^backbone must be"):
            check_backbone(bad)


def test_folder_hash_reads_nothing_outside_the_checkpoint(tmp_path):
    from lhlib.engine.features import _folder_hash

    outside = tmp_path / "secret.json"
    outside.write_text('{"secret": 1}')
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    before = _folder_hash(folder)
    (folder / "linked.json").symlink_to(outside)
    assert _folder_hash(folder) == before
    outside.write_text('{"secret": 2}')
    assert _folder_hash(folder) == before


def test_a_ref_file_that_is_not_a_commit_or_leads_outside_is_not_used(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    from lhlib.engine import features

    cache = tmp_path / "hub"
    refs = cache / "models--owner--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    (refs / "junk").write_text("not a commit")
    (refs / "escape").symlink_to(tmp_path / "hostname")
    (tmp_path / "hostname").write_text("b" * 40)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    assert features._resolve_revision("owner/model", "main", 1.0) == "a" * 40
    for ref in ("junk", "escape"):
        with pytest.raises(features.BackboneUnavailable):
            features._resolve_revision("owner/model", ref, 1.0)


def test_int_lists_are_checked_against_both_bounds():
    from lhlib.engine.validation import check_int_list

    assert check_int_list("slice_ks", [10, 1000], minimum=1, maximum=1000) == [10, 1000]
    with pytest.raises(ValueError, match=r"^slice_ks must be a list of integers >= 1 and <= 999, got \[10, 1000\]$"):
        check_int_list("slice_ks", [10, 1000], minimum=1, maximum=999)
    with pytest.raises(ValueError, match=r"^classes must be a list of integers >= 2, got \[1\]$"):
        check_int_list("classes", [1], minimum=2)
    with pytest.raises(ValueError, match="must not repeat"):
        check_int_list("seeds", [1, 1])


def test_engine_parameters_are_named_in_their_errors():
    import torch

    from lhlib.engine.bounds import random_network
    from lhlib.engine.experiment import trained_networks
    from lhlib.engine.features import extract_features
    from lhlib.engine.landscape import ema

    with pytest.raises(ValueError, match="smoothing"):
        ema(torch.ones(3), smoothing=1.5)
    with pytest.raises(ValueError, match=r"classes_range must be \[low, high\] of integers with 2 <= low"):
        random_network(np.random.default_rng(0), classes_range=(1, 1))
    with pytest.raises(ValueError, match=r"width_range must be \[low, high\] of integers"):
        random_network(np.random.default_rng(0), width_range=(1.5, 3))  # not truncated to (1, 3)
    with pytest.raises(ValueError, match="num_classes"):
        x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
        trained_networks(x, y, num_classes=1, hidden_size=2, num_layers=0, seeds=[0], use_cache=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(None, torch.zeros(2, 3), dataset="digits", indices=(0, 2), batch_size=0)
