"""Synthetic CREMA-D: clip list, layout (FLV with sound, WAV, demographics, summary table with
ties), planted votes, then ``folds`` and ``prepare`` of a few clips through the dataset interface."""

from __future__ import annotations

import csv
import json
import wave
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from fer.data.cache import load_entry
from fer.data.cremad import human_reference, read_demographics, read_summary_table
from fer.data.datasets import get_dataset
from fer.data.prepare import PrepareSettings, run_prepare
from fer.data.synth import MANIFEST, generate_cremad
from fer.data.synth.cremad import clip_specs
from runner import cli

SMALL = dict(actors=5, clips_per_class=1, seconds=0.6, fps=10, size=96, seed=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth-cremad")
    result = CliRunner().invoke(cli, ["synth", "--dataset", "crema-d", "--out", str(out),
                                      *[f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote 30 clips under {out}\n"
    return out


def test_default_clip_list_is_irregular():
    specs = clip_specs(10, 2)
    # 10 actors x 6 emotions x 2, one fewer wherever (actor + emotion) % 4 == 0: 14 such cells.
    assert len(specs) == 106 and len({s.clip_id for s in specs}) == 106
    per_cell = Counter((s.actor, s.emotion) for s in specs)
    assert per_cell[(1004, 0)] == per_cell[(1003, 5)] == 1 and per_cell[(1001, 0)] == 2
    assert {s.level for s in specs} == {"HI", "LO", "MD", "XX"}
    assert {s.level for s in specs if s.emotion == 4} == {"XX"}  # neutral: unspecified level only
    assert {s.sentence for s in specs if s.level != "XX"} == {"IEO"}


def test_layout_and_streams(small):
    flv = sorted((small / "VideoFlash").iterdir())
    wav = sorted((small / "AudioWAV").iterdir())
    assert len(flv) == len(wav) == 30
    assert [p.stem for p in flv] == [p.stem for p in wav]
    with av.open(str(flv[0])) as container:
        assert container.format.name == "flv"
        assert container.streams.video[0].codec_context.name == "flv"
        assert container.streams.audio[0].codec_context.name.startswith("mp3")
        assert container.streams.audio[0].sample_rate == 44100
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 6  # 0.6 s at 10 fps
    with wave.open(str(wav[0])) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth(), w.getnframes()) == (1, 16000, 2, 9600)


def test_demographics_summary_table_and_manifest_agree(small):
    manifest = json.loads((small / MANIFEST).read_text())
    assert manifest["dataset"] == "crema-d" and len(manifest["clips"]) == 30
    assert read_demographics(small) == {1001: "male", 1002: "female", 1003: "female", 1004: "male", 1005: "male"}
    with open(small / "VideoDemographics.csv") as f:
        assert f.readline() == '"ActorID","Age","Sex","Race","Ethnicity"\n'
    votes = read_summary_table(small / "processedResults" / "summaryTable.csv")
    assert set(votes) == set(manifest["clips"])
    letters = "ADFHNS"
    for clip_id, entry in manifest["clips"].items():
        for modality, planted in entry["human"].items():
            assert getattr(votes[clip_id], modality) == tuple(letters.index(x) for x in planted.split(":"))
        assert entry["sex"] == read_demographics(small)[entry["actor"]]
    raw = [e["human"][m] for e in manifest["clips"].values() for m in ("audio", "visual", "av")]
    assert any(":" in v for v in raw)  # some ties
    # The voice cannot tell angry from disgust: its vote on them is A, D or the tie A:D, never another.
    tense = [e["human"]["audio"] for e in manifest["clips"].values() if e["emotion"] in ("angry", "disgust")]
    assert set(tense) <= {"A", "D", "A:D"}
    assert manifest["voice_groups"]["tense"] == ["angry", "disgust"]


def test_folds_then_prepare_a_few_clips(small, tmp_path, face_model):
    result = CliRunner().invoke(cli, ["folds", "--dataset", "crema-d", "--data-root", str(small), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["protocol"], out["n_clips"], out["n_actors"]) == ("crema-d-5fold", 30, 5)
    assert set(out["class_counts"].values()) == {5}
    # Males 1001, 1004, 1005 then females 1002, 1003: one actor per block.
    assert [f["test"] for f in out["folds"]] == [[1001], [1004], [1005], [1002], [1003]]
    clips = get_dataset("crema-d").scan(small).clips
    table = small / "processedResults" / "summaryTable.csv"
    for fold in out["folds"]:
        tested = [c for c in clips if c.actor in fold["test"]]
        assert fold["human"] == json.loads(json.dumps(human_reference(tested, table)))

    (small / "AudioWAV" / f"{clips[1].clip_id}.wav").unlink()  # that clip's audio now from the FLV
    clips = get_dataset("crema-d").scan(small).clips[:3]
    assert [c.audio_from_video for c in clips] == [False, True, False]
    report = run_prepare(None, tmp_path, PrepareSettings(frames=4, size=64, audio_seconds=0.5), workers=1,
                         face_model=face_model, clips=clips)
    assert report == {"prepared": 3, "skipped": [], "flagged": []}
    manifest = json.loads((small / MANIFEST).read_text())["clips"]
    for clip in clips:
        entry = load_entry(next(tmp_path.glob(f"prepared/*/{clip.clip_id}.npz")))
        assert entry.frames.shape == (4, 64, 64, 3) and entry.audio.shape == (8000,)
        assert all(entry.meta["face_detected"])
        assert entry.meta["clip"]["emotion"] == clip.emotion
        assert entry.meta["video_frames"] == 6
        # The face box found matches the planted one within a tenth of its side.
        found, planted = np.mean(entry.meta["face_boxes"], axis=0), np.array(manifest[clip.clip_id]["face_box"])
        assert np.abs(found - planted).max() < 0.1 * (planted[2] - planted[0])
        assert np.abs(entry.audio).max() > 0.01  # speech, not silence


def test_generate_is_deterministic_per_clip(small, tmp_path):
    generate_cremad(tmp_path, **SMALL, workers=1)  # the fixture rendered with two workers
    for name in ("VideoFlash/1002_TIE_ANG_XX.flv", "AudioWAV/1003_IEO_DIS_LO.wav",
                 "processedResults/summaryTable.csv", "VideoDemographics.csv", MANIFEST):
        assert (tmp_path / name).read_bytes() == (small / name).read_bytes(), name
    with open(tmp_path / "processedResults" / "summaryTable.csv") as f:
        assert len(list(csv.reader(f))) == 31


def test_bad_arguments_are_named_together(tmp_path):
    with pytest.raises(ValueError, match="actors=4: must be 5..91.*size=33"):
        generate_cremad(tmp_path, actors=4, size=33)
