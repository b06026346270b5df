"""One-off: the parity test's check for damo-yolo-t (conf 0.3 and published) and yolov7 (detect), all coco-mini photos."""
import sys, tempfile, warnings
sys.path.insert(0, ".")
warnings.simplefilter("ignore")
from dataclasses import replace
from pathlib import Path
import numpy as np, cv2, onnxruntime as ort, fastdet
import reference as ref
from conftest import coco_image_paths
from fastdet.detector import Detector
from fastdet.zoo import export, info
from test_detector import _official_input
photos = [cv2.imread(str(p)) for p in coco_image_paths()]
folder = Path(tempfile.mkdtemp())
for model, th in [("damo-yolo-t", replace(info("damo-yolo-t").detect, conf=0.3)), ("damo-yolo-t", info("damo-yolo-t").detect), ("yolov7", info("yolov7").detect)]:
    path = str(export(model, folder / f"{model}.onnx"))
    found = Detector(path, conf=th.conf, iou=th.iou)(photos, multi_label=th.multi_label, max_det=th.max_det)
    o = ort.SessionOptions(); o.intra_op_num_threads = fastdet.get_num_threads()
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    bad = 0; total = 0
    for photo, got in zip(photos, found):
        t, g = _official_input(model, photo)
        out = [x[0] for x in s.run(None, {"images": t[None]})]
        d = ref.yolov7_nms_reference(out[0], th.conf, th.iou, multi_label=th.multi_label, max_det=th.max_det) if info(model).family == "yolov7" else ref.damo_nms_reference(out[0], out[1], th.conf, th.iou, max_det=th.max_det)
        w = ref.mapped(d, g); total += len(got)
        ok = got.classes.tolist() == w.classes.tolist() and got.scores.tolist() == w.scores.astype(np.float32).tolist() and np.allclose(got.boxes, w.boxes, rtol=2**-20, atol=1e-4)
        bad += not ok
    print(model, th, f"{len(photos)} photos, {total} detections, mismatching images: {bad}", flush=True)
