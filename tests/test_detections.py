"""Detections as a results object: indexing and masks keep the metadata, box formats against
hand-computed values, exports (JSON, pandas, supervision) and drawing (image sources, tags
that stay inside the image, readable text)."""

from __future__ import annotations

import json
import sys

import fastdet
import numpy as np
import pytest
import reference as R
from fastdet.ops.detections import Detection, Detections

NAMES = ("person", "bicycle", "car", "motorcycle")
BACKGROUND = (40, 90, 140)  # BGR; no class colour used below, and neither black nor white


def three(**metadata) -> Detections:
    """Three detections (classes 0, 2, 0; scores descending) on a 100 x 200 image."""
    boxes = np.array([[10, 20, 30, 60], [0, 0, 100, 50], [150, 40, 200, 100]], np.float32)
    scores = np.array([0.9, 0.6, 0.3], np.float32)
    classes = np.array([0, 2, 0], np.int32)
    metadata.setdefault("names", NAMES)
    return Detections(boxes, scores, classes, **metadata)


def empty(**metadata) -> Detections:
    return Detections(
        np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), **metadata
    )


def full_metadata() -> dict:
    return {
        "path": "images/street.jpg",
        "frame": 7,
        "timestamp": 0.28,
        "speed": {"preprocess": 0.4, "inference": 3.1, "postprocess": 0.2},
        "image": np.zeros((100, 200, 3), np.uint8),
    }


def one(box, cls=0, score=0.87, height=240, width=320, names=NAMES) -> Detections:
    """One detection kept with a plain image of the BACKGROUND colour."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    return Detections(
        np.array([box], np.float32),
        np.array([score], np.float32),
        np.array([cls], np.int32),
        names,
        image=image,
    )


def fill_color(cls: int) -> np.ndarray:
    """The colour class `cls` is drawn in, read off the top edge of a plotted box."""
    probe = one((50, 50, 150, 150), cls=cls)
    return probe.plot(labels=False)[50, 100]


def text_pixels(canvas: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Mask of the pixels that are neither background nor the class colour: the tag's text
    (boxes and tags are drawn without anti-aliasing, text with it)."""
    background = np.all(canvas == np.array(BACKGROUND, np.uint8), axis=2)
    return ~(background | np.all(canvas == fill, axis=2))


def extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    assert len(ys), "nothing drawn"
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


# --------------------------------------------------------------------------------------------
# construction and metadata
# --------------------------------------------------------------------------------------------


def test_positional_construction_leaves_metadata_unknown():
    d = Detections(*[np.zeros((2, 4), np.float32), np.ones(2, np.float32), np.zeros(2, np.int32)])
    assert len(d) == 2
    assert (d.names, d.path, d.frame, d.timestamp, d.orig_shape, d.speed, d.image) == (None,) * 7
    assert fastdet.Detections is Detections


def test_metadata_is_kept_and_image_gives_orig_shape(tmp_path):
    meta = full_metadata()
    d = three(**{**meta, "path": tmp_path / "a.jpg"})
    assert d.path == str(tmp_path / "a.jpg") and isinstance(d.path, str)
    assert (d.frame, d.timestamp, d.speed) == (7, 0.28, meta["speed"])
    assert d.image is meta["image"]
    assert d.orig_shape == (100, 200)
    assert three(orig_shape=[480, 640]).orig_shape == (480, 640)


@pytest.mark.parametrize(
    ("metadata", "error", "message"),
    [
        ({"path": 3}, TypeError, "Detections: path must be a str"),
        ({"frame": -1}, ValueError, "Detections: frame must be an integer >= 0, got -1"),
        ({"frame": 1.5}, TypeError, "Detections: frame must be an integer, got 1.5"),
        ({"timestamp": float("nan")}, ValueError, "Detections: timestamp must be a finite"),
        ({"orig_shape": (480, 640, 3)}, TypeError, r"Detections: orig_shape must be a \(height"),
        ({"orig_shape": (0, 640)}, ValueError, r"Detections: orig_shape .* got \(0, 640\)"),
        ({"speed": [1.0]}, TypeError, "Detections: speed must be a dict"),
        ({"image": np.zeros((4, 4), np.uint8)}, ValueError, r"Detections: image must be a \("),
        ({"image": [[0]]}, TypeError, "Detections: image must be .* numpy array, got"),
        (
            {"image": np.zeros((4, 6, 3), np.uint8), "orig_shape": (6, 4)},
            ValueError,
            r"Detections: orig_shape must be the image's \(height, width\) \(4, 6\), got \(6, 4\)",
        ),
    ],
)
def test_bad_metadata_is_refused(metadata, error, message):
    with pytest.raises(error, match=message):
        three(**metadata)


def test_repr_says_n_and_where_from():
    assert repr(three()) == "Detections(n=3)"
    assert repr(three(path="a.jpg")) == "Detections(n=3, path='a.jpg')"
    assert repr(three(frame=12)[:1]) == "Detections(n=1, frame=12)"
    assert repr(empty()) == "Detections(n=0)"


# --------------------------------------------------------------------------------------------
# indexing, slicing, masks, iteration
# --------------------------------------------------------------------------------------------

INDICES = {
    "int": (1, [1]),
    "negative-int": (-1, [2]),
    "numpy-int": (np.int64(0), [0]),
    "slice": (slice(1, 3), [1, 2]),
    "int-array": (np.array([2, 0]), [2, 0]),
    "int-list": ([0, -1], [0, 2]),
    "empty-list": ([], []),
    "bool-list": ([True, False, True], [0, 2]),
}


@pytest.mark.parametrize(("index", "rows"), list(INDICES.values()), ids=list(INDICES))
def test_indexing_selects_rows_and_keeps_metadata(index, rows):
    meta = full_metadata()
    d = three(**meta)
    got = d[index]
    assert isinstance(got, Detections) and len(got) == len(rows)
    np.testing.assert_array_equal(got.boxes, d.boxes[rows].reshape(-1, 4))
    np.testing.assert_array_equal(got.scores, d.scores[rows])
    np.testing.assert_array_equal(got.classes, d.classes[rows])
    assert got.boxes.shape == (len(rows), 4) and got.scores.shape == (len(rows),)
    assert (got.path, got.frame, got.timestamp) == (meta["path"], 7, 0.28)
    assert got.orig_shape == (100, 200) and got.speed == meta["speed"]
    assert got.image is meta["image"] and got.names is NAMES


def test_masks_filter_by_score_and_class():
    d = three(path="a.jpg", frame=3)
    confident = d[d.scores > 0.5]
    np.testing.assert_array_equal(confident.scores, np.array([0.9, 0.6], np.float32))
    people = d[d.classes == 0]
    assert people.class_names == ["person", "person"]
    np.testing.assert_array_equal(people.boxes, d.boxes[[0, 2]])
    assert (people.path, people.frame) == ("a.jpg", 3)
    assert len(d[d.scores > 1]) == 0 and d[d.scores > 1].boxes.shape == (0, 4)


@pytest.mark.parametrize(
    ("index", "error", "message"),
    [
        (1.5, TypeError, r"Detections\[index\]: index must be an int, a slice.*got 1\.5"),
        ("0", TypeError, r"Detections\[index\]: index must be .*got '0'"),
        (True, TypeError, r"Detections\[index\]: index must be .*got True"),
        ((0, 1), TypeError, r"Detections\[index\]: index must be .*got \(0, 1\)"),
        (np.array([0.5]), TypeError, r"got array of dtype float64 and shape \(1,\)"),
        (np.array([True, False]), ValueError, r"boolean mask of shape \(3,\), got .*\(2,\)"),
        (np.zeros((1, 2), np.int64), ValueError, r"index must be a 1-D integer array"),
        (3, IndexError, r"Detections\[index\]: index must be in \[-3, 3\), got 3"),
        (-4, IndexError, r"index must be in \[-3, 3\), got -4"),
        (np.array([0, 3]), IndexError, r"positions in \[-3, 3\).*values in \[0, 3\]"),
    ],
)
def test_bad_indices_name_the_argument(index, error, message):
    with pytest.raises(error, match=message):
        three()[index]


def test_iteration_gives_read_only_rows_in_plain_types():
    rows = list(three())
    assert rows[1] == Detection((0.0, 0.0, 100.0, 50.0), pytest.approx(0.6), 2, "car")
    assert [r.name for r in rows] == ["person", "car", "person"]
    assert all(type(r.score) is float and type(r.class_id) is int for r in rows)
    assert all(type(v) is float for v in rows[0].box)
    with pytest.raises(AttributeError):
        rows[0].score = 1.0
    assert [r.name for r in three(names=None)] == ["0", "2", "0"]


# --------------------------------------------------------------------------------------------
# box formats and names
# --------------------------------------------------------------------------------------------


def test_box_formats_against_hand_computed_values():
    d = three(orig_shape=(100, 200))  # height 100, width 200
    np.testing.assert_array_equal(d.xyxy, d.boxes)
    xywh = [[20, 40, 20, 40], [50, 25, 100, 50], [175, 70, 50, 60]]
    xyxyn = [[0.05, 0.2, 0.15, 0.6], [0, 0, 0.5, 0.5], [0.75, 0.4, 1.0, 1.0]]
    xywhn = [[0.1, 0.4, 0.1, 0.4], [0.25, 0.25, 0.5, 0.5], [0.875, 0.7, 0.25, 0.6]]
    for got, want in [(d.xywh, xywh), (d.xyxyn, xyxyn), (d.xywhn, xywhn)]:
        assert got.dtype == np.float32 and got.shape == (3, 4)
        np.testing.assert_allclose(got, np.array(want), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["xyxyn", "xywhn"])
def test_normalized_boxes_need_orig_shape(name):
    with pytest.raises(ValueError, match=rf"Detections\.{name}: orig_shape must be .*got None"):
        getattr(three(), name)


def test_class_names_and_label():
    assert three().class_names == ["person", "car", "person"]
    assert three(names=None).class_names == ["0", "2", "0"]
    assert three(names=("person",)).class_names == ["person", "2", "person"]
    assert three().label(1) == "car" and three(names=None).label(1) == "2"


def test_empty_detections():
    d = empty(orig_shape=(10, 20), path="a.jpg")
    assert len(d) == 0 and list(d) == []
    for boxes in (d.xyxy, d.xywh, d.xyxyn, d.xywhn):
        assert boxes.shape == (0, 4)
    assert d.numpy().shape == (0, 6) and d.class_names == [] and d.to_list() == []
    assert d[d.scores > 0.5].boxes.shape == (0, 4) and len(d[:]) == 0 and len(d[[]]) == 0
    assert json.loads(d.to_json()) == {"path": "a.jpg", "orig_shape": [10, 20], "detections": []}
    with pytest.raises(IndexError, match=r"index must be in \[0, 0\), got 0"):
        d[0]


# --------------------------------------------------------------------------------------------
# exports
# --------------------------------------------------------------------------------------------


def test_to_list_keeps_its_keys_and_plain_types():
    rows = three(names=None).to_list()
    assert [set(r) for r in rows] == [{"box", "score", "class"}] * 3
    named = three().to_list()
    assert [r["name"] for r in named] == ["person", "car", "person"]
    assert named[1]["box"] == [0.0, 0.0, 100.0, 50.0] and named[1]["class"] == 2
    assert type(named[0]["score"]) is float and type(named[0]["class"]) is int


def test_to_json_round_trip():
    d = three(path="a.jpg", frame=4, timestamp=0.16, orig_shape=(100, 200))
    record = json.loads(d.to_json())
    assert record == {
        "path": "a.jpg",
        "frame": 4,
        "timestamp": 0.16,
        "orig_shape": [100, 200],
        "detections": d.to_list(),
    }
    assert json.loads(three().to_json()) == {"detections": three().to_list()}
    assert "\n" in d.to_json(indent=2) and "\n" not in d.to_json()


def test_to_coco_is_unchanged():
    records = three().to_coco(image_id=139)
    assert records[1] == {"image_id": 139, "category_id": 3, "bbox": [0, 0, 100, 50], "score": 0.6}
    assert [r["category_id"] for r in records] == [1, 3, 1]


def test_to_coco_computes_as_each_family_s_evaluation(rng):
    """ "yolov7": test.py's float32 xyxy2xywh then centre minus half the size, rounded to 3 and 5
    decimals; "damo": x1, y1 and the float32 differences, unrounded (docs/facts.md section 6)."""
    xy = rng.uniform(-20, 600, size=(500, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 300, size=(500, 2))], axis=1)
    boxes = boxes.astype(np.float32)
    scores = rng.uniform(0, 1, size=500).astype(np.float32)
    classes = rng.integers(0, 80, size=500).astype(np.int32)
    d = Detections(boxes, scores, classes)
    two = np.float32(2)
    size = boxes[:, 2:] - boxes[:, :2]
    corner = (boxes[:, :2] + boxes[:, 2:]) / two - size / two
    yolov7 = d.to_coco(7)
    assert [r["bbox"] for r in yolov7] == [
        [round(v, 3) for v in row] for row in np.concatenate([corner, size], 1).tolist()
    ]
    assert [r["score"] for r in yolov7] == [round(s, 5) for s in scores.tolist()]
    damo = d.to_coco(7, convention="damo")
    assert [r["bbox"] for r in damo] == np.concatenate([boxes[:, :2], size], 1).tolist()
    assert [r["score"] for r in damo] == scores.tolist()
    for records in (yolov7, damo):
        assert [r["category_id"] for r in records] == [R.COCO_CATEGORY_IDS[c] for c in classes]
        assert all(r["image_id"] == 7 for r in records)


def test_to_pandas():
    pd = pytest.importorskip("pandas")
    frame = three().to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["x1", "y1", "x2", "y2", "score", "class", "name"]
    assert frame["name"].tolist() == ["person", "car", "person"]
    np.testing.assert_array_equal(frame[["x1", "y1", "x2", "y2"]].to_numpy(), three().boxes)
    assert frame["class"].tolist() == [0, 2, 0]
    assert len(empty().to_pandas()) == 0


def test_to_supervision():
    sv = pytest.importorskip("supervision")
    got = three().to_supervision()
    assert isinstance(got, sv.Detections) and len(got) == 3
    np.testing.assert_array_equal(got.xyxy, three().boxes)
    np.testing.assert_array_equal(got.confidence, three().scores)
    np.testing.assert_array_equal(got.class_id, three().classes)
    assert list(got.data["class_name"]) == ["person", "car", "person"]
    assert len(got[got.confidence > 0.5]) == 2
    assert len(empty().to_supervision()) == 0


@pytest.mark.parametrize(
    ("module", "call", "message"),
    [
        ("pandas", "to_pandas", r"Detections\.to_pandas needs pandas: pip install pandas"),
        (
            "supervision",
            "to_supervision",
            r"Detections\.to_supervision needs supervision: pip install supervision",
        ),
        (
            "cv2",
            "plot",
            r"Detections\.plot needs opencv-python-headless: pip install 'fastdet\[vision\]'",
        ),
        (
            "cv2",
            "save",
            r"Detections\.save needs opencv-python-headless: pip install 'fastdet\[vision\]'",
        ),
    ],
)
def test_missing_optional_dependency_says_what_to_install(monkeypatch, module, call, message):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    d = three(image=np.zeros((100, 200, 3), np.uint8))
    args = ("out.png",) if call == "save" else ()
    with pytest.raises(ImportError, match=message):
        getattr(d, call)(*args)


# --------------------------------------------------------------------------------------------
# drawing: where the image comes from
# --------------------------------------------------------------------------------------------


def test_plot_with_the_stored_image_leaves_it_untouched():
    pytest.importorskip("cv2")
    d = one((100, 100, 200, 200))
    before = d.image.copy()
    drawn = d.plot()
    np.testing.assert_array_equal(d.image, before)
    assert drawn.shape == before.shape and drawn.dtype == np.uint8
    np.testing.assert_array_equal(drawn[150, 100], fill_color(0))  # the box's left edge
    np.testing.assert_array_equal(drawn[150, 150], BACKGROUND)  # inside the box


def test_plot_reads_the_path_and_an_explicit_image_wins(tmp_path):
    cv2 = pytest.importorskip("cv2")
    kept = one((100, 100, 200, 200))
    path = tmp_path / "photo.png"
    assert cv2.imwrite(str(path), kept.image)
    from_path = Detections(kept.boxes, kept.scores, kept.classes, NAMES, path=str(path))
    assert from_path.image is None
    np.testing.assert_array_equal(from_path.plot(), kept.plot())
    other = np.zeros((240, 320, 3), np.uint8)
    drawn = kept.plot(other)
    np.testing.assert_array_equal(drawn[150, 150], [0, 0, 0])  # drawn on `other`
    np.testing.assert_array_equal(drawn[150, 100], fill_color(0))


def test_plot_without_any_image_says_what_to_pass(tmp_path):
    pytest.importorskip("cv2")
    with pytest.raises(ValueError, match=r"Detections\.plot: image must be .*neither.*got None"):
        three().plot()
    with pytest.raises(ValueError, match=r"Detections\.save: image must be .*got None"):
        three().save(tmp_path / "out.png")
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match=r"Detections\.plot: path must be an existing image"):
        three(path=missing).plot()
    with pytest.raises(TypeError, match=r"Detections\.plot: image must be .*got \[1, 2\]"):
        three().plot([1, 2])


def test_save_writes_the_plot(tmp_path):
    cv2 = pytest.importorskip("cv2")
    d = one((100, 100, 200, 200))
    out = tmp_path / "drawn.png"
    d.save(out)
    np.testing.assert_array_equal(cv2.imread(str(out)), d.plot())
    bare = Detections(d.boxes, d.scores, d.classes, NAMES)
    bare.save(tmp_path / "given.png", d.image)  # the positional form existing callers use
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "given.png")), d.plot())
    with pytest.raises(ValueError, match=r"Detections\.save: path must be .*suffix OpenCV"):
        d.save(tmp_path / "drawn.nope")


def test_empty_detections_plot_the_image_unchanged():
    pytest.importorskip("cv2")
    image = np.full((30, 40, 3), 7, np.uint8)
    drawn = empty(image=image).plot()
    np.testing.assert_array_equal(drawn, image)
    assert drawn is not image


# --------------------------------------------------------------------------------------------
# drawing: tags, fonts, colours
# --------------------------------------------------------------------------------------------

EDGES = {
    "top-left": (0, 0, 60, 40),
    "top-right": (300, 0, 319, 40),
    "bottom": (20, 230, 90, 239),
    "bottom-right": (310, 230, 330, 250),
    "whole-image": (0, 0, 319, 239),
    "beyond-the-image": (-50, -50, 400, 300),
}


@pytest.mark.parametrize("box", list(EDGES.values()), ids=list(EDGES))
def test_tags_at_the_edges_stay_whole_inside_the_image(box):
    pytest.importorskip("cv2")
    fill = fill_color(0)
    reference = text_pixels(one((100, 100, 200, 200)).plot(), fill)  # a tag with room around it
    got = text_pixels(one(box).plot(), fill)
    top, bottom, left, right = extent(got)
    ref_top, ref_bottom, ref_left, ref_right = extent(reference)
    # The same text, not cut: same size and the same number of pixels, off the border.
    assert (bottom - top, right - left) == (ref_bottom - ref_top, ref_right - ref_left)
    assert got.sum() == reference.sum()
    assert top > 0 and left > 0 and bottom < 239 and right < 319


def test_tag_sits_above_the_box_when_there_is_room():
    pytest.importorskip("cv2")
    fill = fill_color(0)
    top, bottom, left, _ = extent(text_pixels(one((100, 100, 200, 200)).plot(), fill))
    assert bottom < 100 and 100 <= left < 110
    # No room above: moved inside the box, just under its top edge.
    top, bottom, left, _ = extent(text_pixels(one((100, 0, 200, 200)).plot(), fill))
    assert 0 < top and bottom < 20 and 100 <= left < 110


def test_tags_larger_than_the_image_are_clipped_without_error():
    pytest.importorskip("cv2")
    drawn = one((0, 0, 5, 5), height=8, width=10).plot()
    assert drawn.shape == (8, 10, 3)
    assert not np.all(drawn == np.array(BACKGROUND, np.uint8))


def test_labels_and_scores_switch_the_text():
    pytest.importorskip("cv2")
    d = one((100, 100, 200, 200))
    fill = fill_color(0)
    assert not text_pixels(d.plot(labels=False), fill).any()
    _, _, left, right = extent(text_pixels(d.plot(), fill))
    _, _, left_bare, right_bare = extent(text_pixels(d.plot(scores=False), fill))
    assert right_bare - left_bare < right - left  # "person" is narrower than "person 0.87"


def test_line_width():
    pytest.importorskip("cv2")
    d = one((100, 100, 200, 200))
    fill = fill_color(0)
    rows = {}
    for width in (1, 5):
        column = d.plot(labels=False, line_width=width)[:, 150]
        rows[width] = int(np.all(column == fill, axis=1).sum())  # the top and bottom edges
    # OpenCV draws a thick line 2 * (width // 2) + 1 pixels wide.
    assert rows == {1: 2, 5: 14}
    with pytest.raises(ValueError, match=r"Detections\.plot: line_width must be an integer >= 1"):
        d.plot(line_width=0)


def test_font_grows_with_the_image():
    pytest.importorskip("cv2")
    heights = []
    for height, width in [(240, 320), (1080, 1920)]:
        d = one((width // 3, height // 3, width // 2, height // 2), height=height, width=width)
        top, bottom, _, _ = extent(text_pixels(d.plot(), fill_color(0)))
        heights.append(bottom - top)
    assert heights[1] > 3 * heights[0]


def test_text_is_dark_on_light_colours_and_light_on_dark_ones():
    pytest.importorskip("cv2")
    seen = {"light": 0, "dark": 0}
    for cls in range(12):
        d = one((100, 100, 200, 200), cls=cls)
        fill = fill_color(cls)
        luma = 0.114 * fill[0] + 0.587 * fill[1] + 0.299 * fill[2]
        canvas = d.plot()
        mask = text_pixels(canvas, fill)
        # The ink is the text pixel farthest from the tag colour (anti-aliasing blends the two).
        pixels = canvas[mask].astype(int)
        ink = pixels[np.abs(pixels - fill.astype(int)).sum(axis=1).argmax()]
        if luma > 150:
            seen["light"] += 1
            assert ink.max() < 60, (cls, fill.tolist(), ink.tolist())
        elif luma < 80:
            seen["dark"] += 1
            assert ink.min() > 195, (cls, fill.tolist(), ink.tolist())
    assert seen["light"] and seen["dark"], seen  # both cases were exercised


def test_class_colours_are_stable_and_distinct():
    pytest.importorskip("cv2")
    colors = [tuple(fill_color(cls).tolist()) for cls in range(8)]
    assert len(set(colors)) == 8
    again = one((10, 10, 60, 60), cls=3, height=100, width=100).plot(labels=False)
    assert tuple(again[30, 10].tolist()) == colors[3]
