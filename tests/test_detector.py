"""The detector API that predict, evaluate and serve share: typed results per frame, face, track and video."""

from __future__ import annotations

import numpy as np
import pytest

from fakefinder import (
    Detector,
    FaceResult,
    FrameResult,
    SynthSettings,
    TrackResult,
    VideoResult,
    load_dataset,
    load_detector,
    synth,
)
from fakefinder.data.tracks import link_tracks
from fakefinder.models.features import load_crops
from fakefinder.models.strength import headline


@pytest.fixture(scope="module")
def trained(baseline):
    return baseline


@pytest.mark.slow
def test_load_once_predict_video_image_and_faces(trained, learnable, tracking, tmp_path):
    import cv2

    detector = load_detector(trained.model_path, device="auto")
    assert isinstance(detector, Detector) and detector.threshold == trained.trained.model.card.verdict.threshold
    assert detector.settings.fps == 2  # the preparation its training data had
    video = learnable.out.parent / "swap" / f"{load_dataset(learnable.out).video_ids[0]}.mp4"
    result = detector.predict_video(video)
    assert isinstance(result, VideoResult) and result.error is None and result.frames_sampled == 4
    assert all(isinstance(f, FrameResult) and all(isinstance(x, FaceResult) for x in f.faces) for f in result.frames)
    assert [isinstance(t, TrackResult) for t in result.tracks] == [True]
    assert result.p_fake == pytest.approx(result.tracks[0].p_fake)
    p, t = result.p_fake, detector.threshold
    # The headline follows the strength of evidence; the threshold's yes/no is the decision
    assert result.strength == detector.card.strength.map.assess(p)
    assert result.verdict == headline(result.strength.likelihood_ratio, conclusive=detector.card.strength.conclusive)
    assert result.decision == ("FAKE" if p >= t else "REAL")
    assert result.to_dict()["rule"] == detector.rule.meaning() and "swap-efficientnet_lite0" in detector.describe()
    # With a strength map the LR decides INCONCLUSIVE: the threshold's rule has no band
    assert detector.rule.band == result.to_dict()["inconclusive_band"] == 0 < detector.verdict.band
    crop = load_dataset(learnable.out).crop_files[0]
    cv2.imwrite(str(tmp_path / "face.png"), cv2.imread(str(crop)))
    image = detector.predict(tmp_path / "face.png")
    assert image.frames_sampled == 1 and image.faces == 1
    p = detector.predict_faces(load_crops([crop, crop]))
    assert p.shape == (2,) and p[0] == pytest.approx(p[1]) and 0 <= p[0] <= 1
    by_run = load_detector(trained.run_id[:12], tracking_uri=tracking)  # the same model through its run id
    assert by_run.threshold == detector.threshold and by_run.card == detector.card


@pytest.mark.slow
def test_progress_while_a_video_is_read(trained, learnable):
    detector = load_detector(trained.model_path)
    video = learnable.out.parent / "swap" / f"{load_dataset(learnable.out).video_ids[0]}.mp4"
    seen = []
    result = detector.predict_video(video, on_progress=lambda frames, faces: seen.append((frames, faces)))
    assert [f for f, _ in seen] == [1, 2, 3, 4, 4]  # each frame as it is read, then the last word
    faces = [n for _, n in seen]
    assert faces == sorted(faces) and seen[-1] == (4, result.faces) and result.faces >= 3


@pytest.mark.slow
def test_two_people_make_two_tracks_and_the_most_suspicious_one_decides(trained, tmp_path):
    made = synth(tmp_path / "two", SynthSettings(videos=2, seed=3, seconds=2, people=2, sizes=((960, 540),),
                                                 methods=("swap",)))
    detector = load_detector(trained.model_path)
    assert detector.settings.faces == "all"  # trained on the largest face, but every face is scored
    for video in made.videos:
        result = detector.predict_video(made.out / f"{video.name}.mp4")
        assert len(result.tracks) == 2, result.to_dict()["tracks"]
        per_frame = [sorted(f.track for f in frame.faces) for frame in result.frames]
        assert all(tracks == [0, 1] for tracks in per_frame)
        assert result.p_fake == max(t.p_fake for t in result.tracks)


def test_face_tracks_follow_people_across_frames():
    left, right = (100, 100, 80, 80), (600, 120, 90, 90)
    frames = [[left, right], [right, left], [(110, 104, 80, 80)], [(605, 118, 92, 92), (120, 100, 82, 82)],
              [(900, 500, 300, 300)]]
    assert link_tracks(frames) == [[0, 1], [1, 0], [0], [1, 0], [2]]
    assert link_tracks([]) == [] and link_tracks([[], [left]]) == [[], [0]]


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 2), (4, 4), (2, 9), (7, 7), (9, 9), (12, 3)])
def test_face_assignment_is_the_optimum(shape):
    """Small problems are solved by trying every pairing, larger ones by SciPy's solver: both give its optimum."""
    from scipy.optimize import linear_sum_assignment

    from fakefinder.data.tracks import _assignment

    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.random(shape)
        pairs = _assignment(cost.tolist())
        rows, cols = linear_sum_assignment(cost)
        assert len(pairs) == min(shape) and len({c for _, c in pairs}) == len(pairs)
        assert [r for r, _ in pairs] == sorted(r for r, _ in pairs)
        assert sum(cost[r, c] for r, c in pairs) == pytest.approx(cost[rows, cols].sum())


@pytest.mark.slow
def test_scores_do_not_depend_on_batching(trained, learnable):
    crops = load_crops(load_dataset(learnable.out).crop_files[:10])
    detector = load_detector(trained.model_path)
    whole = detector.predict_faces(crops)
    pieces = np.concatenate([detector.predict_faces(crops[:3]), detector.predict_faces(crops[3:])])
    np.testing.assert_allclose(whole, pieces, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_still_video_keeps_its_most_suspicious_faces_despite_equal_scores(trained, learnable, tmp_path):
    """Every frame the same (lossless FFV1): equal scores must not make the ranking compare faces."""
    import av

    source = learnable.out.parent / "swap" / f"{load_dataset(learnable.out).video_ids[0]}.mp4"
    with av.open(str(source)) as container:
        still = next(container.decode(video=0)).to_ndarray(format="rgb24")
    with av.open(str(tmp_path / "still.mkv"), "w") as out:
        stream = out.add_stream("ffv1", rate=5)
        stream.width, stream.height, stream.pix_fmt = still.shape[1], still.shape[0], "yuv444p"
        for _ in range(15):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(still, format="rgb24")))
        out.mux(stream.encode())
    result = load_detector(trained.model_path).predict_video(tmp_path / "still.mkv", keep_faces=2)
    assert result.error is None and result.faces == 6, result.error
    assert max(f.p_fake for f in result.frames) - min(f.p_fake for f in result.frames) < 1e-5  # ties, or nearly
    assert len(result.suspicious) == 2
