"""The command line speaks PaddleGAN's option spellings (and dashed aliases) and maps them onto options."""

from __future__ import annotations

import pytest

from lipsync.cli import build_parser, main, one_line, options_from_args
from lipsync.errors import LipSyncError
from lipsync.options import LipSyncOptions

BASE = ["--face", "f.jpg", "--audio", "a.wav", "--outfile", "/tmp/o.mp4"]


def parse(*extra: str) -> LipSyncOptions:
    return options_from_args(build_parser().parse_args(BASE + list(extra)))


def test_defaults_equal_the_options_defaults():
    assert parse() == LipSyncOptions()


def test_every_seed_option_is_accepted():
    opts = parse(
        "--checkpoint_path", "/m/w.pth", "--static", "--fps", "30", "--pads", "1", "2", "3", "4",
        "--face_det_batch_size", "4", "--wav2lip_batch_size", "64", "--resize_factor", "2",
        "--crop", "0", "100", "5", "-1", "--box", "10", "90", "20", "80", "--rotate", "--nosmooth",
        "--cpu", "--face_detector", "sfd",
    )  # fmt: skip
    assert opts.checkpoint == "/m/w.pth" and opts.static and opts.fps == 30
    assert opts.pads == (1, 2, 3, 4) and opts.crop == (0, 100, 5, -1) and opts.box == (10, 90, 20, 80)
    assert opts.face_det_batch_size == 4 and opts.wav2lip_batch_size == 64 and opts.resize_factor == 2
    assert opts.rotate and not opts.smooth and opts.device == "cpu" and opts.face_detector == "sfd"


def test_dashed_aliases():
    opts = parse("--checkpoint-path", "wav2lip_gan", "--face-det-batch-size", "2", "--resize-factor", "3")
    assert (opts.checkpoint, opts.face_det_batch_size, opts.resize_factor) == ("wav2lip_gan", 2, 3)


@pytest.mark.parametrize(
    "words, expected",
    [([], False), (["--static"], True), (["--static", "True"], True), (["--static", "False"], False),
     (["--static", "0"], False), (["--static", "yes"], True)],
)  # fmt: skip
def test_static_is_a_real_flag(words, expected):
    assert parse(*words).static is expected


def test_seed_no_box_value_means_detect():
    assert parse("--box", "-1", "-1", "-1", "-1").box is None


def test_blazeface_uses_the_bundled_detector_and_s3fd_means_sfd():
    assert parse("--face_detector", "blazeface").face_detector == "haar"
    assert parse("--face-detector", "s3fd").face_detector == "sfd"


def test_face_enhancement_turns_gpen_on_in_both_spellings():
    assert parse().face_enhancement is False and parse("--face_enhancement", "false") == LipSyncOptions()
    on = LipSyncOptions(face_enhancement=True)
    assert parse("--face_enhancement") == parse("--face-enhancement") == parse("--face_enhancement", "true") == on
    weights = parse("--face_enhancement", "--enhancer_weights", "/models/gpen.pdparams")
    assert weights == LipSyncOptions(face_enhancement=True, enhancer_weights="/models/gpen.pdparams")
    assert parse("--enhancer-weights", "x.pth").enhancer_weights == "x.pth"


def test_bad_values_are_our_error():
    with pytest.raises(LipSyncError, match="box"):
        parse("--box", "50", "10", "0", "20")
    with pytest.raises(LipSyncError, match="resize_factor"):
        parse("--resize_factor", "0")
    with pytest.raises(LipSyncError, match="fps must be at most 60 frames a second .got 1000."):
        parse("--fps", "1000")
    assert parse("--fps", "60").fps == 60.0


@pytest.mark.parametrize(
    "extra, said",
    [(["--face_detector", "retina"], "invalid choice: 'retina'"), (["--pads", "0", "10", "0"], "expected 4 arguments"),
     (["--fps", "fast"], "invalid float value"), (["--wrong"], "unrecognized arguments: --wrong")],
)  # fmt: skip
def test_usage_errors_are_one_line_exit_2(capsys, extra, said):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(BASE + extra)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and said in err, err
    assert "--help" in err


def test_text_is_the_speech_instead_of_an_audio_file(capsys):
    """--text (or --audio, not both, one of them) with its --voice and --rate; those two without --text are a
    mistake said at once, before anything loads."""
    face_out = ["--face", "f.png", "--outfile", "o.mp4"]
    args = build_parser().parse_args([*face_out, "--text", "Hello", "--voice", "fr-FR-DeniseNeural", "--rate", "20"])
    assert (args.audio, args.text, args.voice, args.rate) == (None, "Hello", "fr-FR-DeniseNeural", 20)
    for extra, said in ((["--audio", "a.wav", "--text", "Hi"], "not allowed with argument --audio"),
                        ([], "one of the arguments --audio --text is required")):  # fmt: skip
        with pytest.raises(SystemExit):
            build_parser().parse_args(face_out + extra)
        assert said in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*face_out, "--audio", "a.wav", "--voice", "en-GB-SoniaNeural"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--voice and --rate are for --text" in err and err.count("\n") == 1


def test_list_voices_prints_the_service_s_list_or_the_built_in_one(capsys, monkeypatch):
    """--list_voices needs no --face: it prints a voice a line (name, language, who) and exits 0; offline, the
    built-in list, which its first line says."""
    from lipsync import tts

    def unreachable():
        raise OSError("Name or service not known")

    monkeypatch.setattr(tts, "catalog", lambda: tts.VoiceCatalog(fetch=unreachable))
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--list_voices"])
    lines = capsys.readouterr().out.splitlines()
    assert exc.value.code == 0 and lines[0].startswith("the built-in voices (edge-tts's service could not be reached")
    assert len(lines) == 1 + len(tts.curated_voices())
    assert any(line.split()[0] == tts.DEFAULT_VOICE and "Emma (female, multilingual)" in line for line in lines)
    service = [{"ShortName": "cy-GB-NiaNeural", "Locale": "cy-GB", "Gender": "Female",
                "FriendlyName": "Microsoft Nia Online (Natural) - Welsh (United Kingdom)"}]  # fmt: skip
    monkeypatch.setattr(tts, "catalog", lambda: tts.VoiceCatalog(fetch=lambda: service))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--list-voices"])
    assert capsys.readouterr().out.splitlines() == [
        "edge-tts's voices:", f"{'cy-GB-NiaNeural':40} {'Welsh (United Kingdom)':32} Nia (female)"]


def test_multi_line_messages_print_as_one():
    assert one_line("first\n  second \n\nthird") == "first | second | third"


def test_threads_option():
    assert parse().threads == 0, "automatic by default"
    assert parse("--threads", "3").threads == 3
    assert "CPU quota/affinity" in " ".join(build_parser().format_help().split())
    with pytest.raises(LipSyncError, match="threads must be 0"):
        parse("--threads", "-2")


def test_threads_must_be_a_number(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(BASE + ["--threads", "many"])
    assert exc.value.code == 2 and "invalid int value: 'many'" in capsys.readouterr().err


def test_face_index_in_both_spellings_and_checked():
    assert parse().face_index is None
    assert parse("--face_index", "1").face_index == 1 and parse("--face-index", "0").face_index == 0
    with pytest.raises(LipSyncError, match="whole number ≥ 0"):
        parse("--face_index", "-1")
    with pytest.raises(LipSyncError, match="face_index and box"):
        parse("--face_index", "1", "--box", "10", "90", "20", "80")
