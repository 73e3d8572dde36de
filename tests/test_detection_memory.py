"""A still's detector remembers the pictures it searched: the same picture again (an example, a portrait given
many texts, the face picker before the run) is answered from memory, exactly as the detector answered."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

import lipsync
from lipsync import detectors, engine, runtime
from lipsync.options import LipSyncOptions

HAAR = LipSyncOptions(face_detector="haar", device="cpu")


class CountingDetector:
    """Finds one 'face' per frame, placed by the frame's mean, and records every frame it was given."""

    def __init__(self) -> None:
        self.seen: list = []

    def faces(self, frames):
        self.seen += [frame.copy() for frame in frames]
        return [[((int(f.mean()), 0, int(f.mean()) + 10, 10), 0.9)] for f in frames]

    def __call__(self, frames):
        return [found[0][0] for found in self.faces(frames)]


def _frames(count: int, side: int = 32) -> list:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(count)]


def test_a_frame_searched_before_is_not_searched_again():
    inner = CountingDetector()
    detect = detectors.Remembering(inner, detectors.DetectionMemory())
    a, b, c = _frames(3)
    first = detect.faces([a, b])
    again = detect.faces([a.copy(), c, b])  # equal pixels, another array: remembered; c is new
    assert len(inner.seen) == 3 and np.array_equal(inner.seen[2], c)
    assert again == [first[0], inner.faces([c])[0], first[1]]
    assert detect([a]) == [first[0][0][0]]  # calling it gives the most confident box, from memory too
    assert len(inner.seen) == 4  # only the inner.faces([c]) above


def test_one_pixel_or_the_shape_makes_it_another_frame():
    inner = CountingDetector()
    detect = detectors.Remembering(inner, detectors.DetectionMemory())
    (a,) = _frames(1)
    detect.faces([a])
    touched = a.copy()
    touched[5, 5, 1] ^= 1
    detect.faces([touched])
    detect.faces([a.reshape(16, 64, 3)])  # the same bytes in another shape
    assert len(inner.seen) == 3


def test_memory_forgets_the_least_recently_used_and_hands_out_copies():
    memory = detectors.DetectionMemory(size=2)
    a, b, c = (bytes([i]) * 16 for i in range(3))
    memory.keep(a, [((0, 0, 1, 1), 0.5)])
    memory.keep(b, [])
    memory.recall(a)  # a used last: b goes when c comes
    memory.keep(c, [((2, 2, 3, 3), 0.7)])
    assert memory.recall(b) is None and memory.recall(a) == [((0, 0, 1, 1), 0.5)]
    memory.recall(c).clear()  # a caller changing its list does not change the memory
    assert memory.recall(c) == [((2, 2, 3, 3), 0.7)]


def test_only_a_still_s_detector_remembers():
    eng = engine.Engine()
    device = runtime.choose_device("cpu", announce=False)
    still, _ = engine.run_detector(eng, HAAR, device, still=True)
    moving, _ = engine.run_detector(eng, HAAR, device, still=False)
    assert isinstance(still, detectors.Remembering) and not isinstance(moving, detectors.Remembering)
    again, _ = engine.run_detector(eng, HAAR, device, still=True)
    assert again._memory is still._memory  # one memory per detector, for every run of the engine


def test_the_same_picture_run_again_skips_detection_and_gives_the_same_video(media, tmp_path, monkeypatch):
    searched = []
    detect = detectors.HaarDetector._detect
    monkeypatch.setattr(detectors.HaarDetector, "_detect", lambda self, frame: searched.append(1) or detect(self, frame))
    eng = lipsync.Engine()
    outs = [tmp_path / f"run{i}.mp4" for i in range(2)]
    for out in outs:
        lipsync.run(media["photo"], media["speech"], out, HAAR, engine=eng)
        if out == outs[0]:
            first_run = len(searched)
    assert first_run >= 1 and len(searched) == first_run, "the second run searched the picture again"
    assert _frames_of(outs[0]) == _frames_of(outs[1])
    mirrored = tmp_path / "mirrored.png"
    cv2.imwrite(str(mirrored), cv2.imread(str(media["photo"]))[:, ::-1])
    lipsync.run(mirrored, media["speech"], tmp_path / "other.mp4", HAAR, engine=eng)
    assert len(searched) > first_run, "another picture must be searched"


def _frames_of(path: Path) -> list:
    from conftest import read_video_frames

    return [frame.tobytes() for frame in read_video_frames(path)]


def test_a_run_after_who_speaks_does_not_search_the_picture_again(media, tmp_path, monkeypatch):
    searched = []
    detect = detectors.HaarDetector._detect
    monkeypatch.setattr(detectors.HaarDetector, "_detect", lambda self, frame: searched.append(1) or detect(self, frame))
    eng = lipsync.Engine()
    assert lipsync.find_faces(media["photo"], HAAR, engine=eng) and searched
    searched.clear()
    lipsync.run(media["photo"], media["speech"], tmp_path / "out.mp4", HAAR, engine=eng)
    assert searched == [], "the picker's searches cover the run's"
