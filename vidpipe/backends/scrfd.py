"""SCRFD face detector (5 landmarks) and SCRFD person detector, ONNX, loaded through insightface.

Detection size: the image is shrunk (never enlarged) so its long side is at most
``max_side``, then zero-padded at the bottom/right to multiples of 32 and given to
``SCRFD.detect`` with ``input_size`` equal to that padded size. SCRFD.detect letterboxes
by itself (aspect kept, image top-left, rest zero) but *scales the image to fill*
``input_size``, i.e. it enlarges images smaller than the input; padding ourselves makes
its scale exactly 1, so small photos are analysed at their own size (DESIGN.md: detecting
small photos at 640 missed faces) and a 16:9 frame costs 640x384, not 640x640.

Batches: the images of one `detect` call that share a padded size go through the network in
one call. SCRFD's exported heads flatten (N, C, H, W) as (H, W, N, C), which mixes the
images of a batch; the graph is loaded with that Transpose made (N, H, W, C), the same for
one image, and each image's outputs are then decoded by insightface's own code, as before.

The detector runs in one dynamic-shape ONNX Runtime session. insightface 2.1 would
otherwise build a static-shape session per input size (measured ~14 MB and ~70 ms each,
never evicted: unbounded for photo folders of mixed sizes); the speed is the same
(640x384: 4.3 ms static vs 4.6 ms dynamic here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vidpipe.backends._onnx import InputBuffer, free_batch, onnx_providers, session, session_options
from vidpipe.backends.base import FACE, PERSON, Detections, Detector
from vidpipe.registry import BackendContext, register
from vidpipe.util import shrink

STRIDE = 32  # the face models' coarsest feature stride: input sides must be multiples of it


def detector_input(img: np.ndarray, max_side: int, stride: int = STRIDE) -> tuple[np.ndarray, float]:
    """(image shrunk to long side <= max_side and zero-padded to multiples of `stride`, scale)."""
    img, scale = shrink(img, max_side)
    h2, w2 = img.shape[:2]
    ph, pw = -(-h2 // stride) * stride, -(-w2 // stride) * stride
    if (ph, pw) != (h2, w2):
        padded = np.zeros((ph, pw, 3), np.uint8)
        padded[:h2, :w2] = img
        img = padded
    return img, scale


def _images_apart(node, constants, numpy_helper) -> bool:
    """SCRFD's (N, C, H, W) -> (H, W, N, C) before the flatten becomes (N, H, W, C)."""
    for attr in node.attribute:
        if node.op_type == "Transpose" and attr.name == "perm" and list(attr.ints) == [2, 3, 0, 1]:
            attr.ints[:] = [0, 2, 3, 1]
            return True
    return False


class _Replay:
    """A stand-in session that hands insightface's decoder outputs computed in a batch."""

    def __init__(self, outputs: list[np.ndarray]) -> None:
        self.outputs = outputs

    def run(self, names, feed) -> list[np.ndarray]:
        return self.outputs


def _blob_shape_only(img: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """What insightface's decoder reads of the input blob when the outputs are replayed: its
    shape (a zero-stride view; the batch's blob was built once, in `_batched_outputs`)."""
    return np.broadcast_to(np.float32(0), (1, 3, input_size[1], input_size[0]))


class ScrfdFaceDetector(Detector):
    """SCRFD from an ONNX file: boxes, scores and 5 landmarks (eyes, nose, mouth corners)."""

    kind = FACE
    stride = STRIDE

    def __init__(self, path: Path, max_side: int = 640, threshold: float = 0.5,
                 device: str = "auto", threads: int = 0) -> None:
        super().__init__()
        from insightface.model_zoo import get_model
        from insightface.model_zoo.scrfd import SCRFD

        model = get_model(str(path), providers=onnx_providers(device), sess_options=session_options(threads),
                          static_shape_sessions=False)
        if not isinstance(model, SCRFD) or not model.use_kps:
            raise ValueError(f"{path} is not an SCRFD detector with keypoints")
        self.name = "scrfd" if self.kind == FACE else "scrfd_person"
        self.model = model
        self.max_side, self.threshold = int(max_side), float(threshold)
        self.weight_files = [Path(path)]
        self.providers = list(model.session.get_providers())
        graph = None if model.batched else free_batch(path, _images_apart)
        self.batch_session = session(graph, device, threads) if graph is not None else None
        self._input = InputBuffer()

    def detect(self, images: Sequence[np.ndarray]) -> Detections:
        parts = []
        inputs = [detector_input(img, self.max_side, self.stride) for img in images]
        outputs = self._batched_outputs([inp for inp, _ in inputs])
        for i, (img, (inp, scale)) in enumerate(zip(images, inputs)):
            det, kps = self._detect_one(inp, outputs.get(i))
            if len(det) == 0:
                continue
            boxes = det[:, :4] / scale
            ih, iw = img.shape[:2]
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, iw)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, ih)
            extra = {"landmarks": (kps / scale).astype(np.float32)} if self.kind == FACE else {}
            parts.append(Detections.of(boxes, det[:, 4], self.kind, i, **extra))
        return Detections.merge(parts)

    def _batched_outputs(self, inputs: list[np.ndarray]) -> dict[int, list[np.ndarray]]:
        """The network's outputs for each image, one call per padded size (none without a
        batch session: then each image makes its own call)."""
        if self.batch_session is None or len(inputs) < 2:
            return {}
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, inp in enumerate(inputs):
            by_size.setdefault(inp.shape, []).append(i)
        names = self.model.output_names
        outputs = {}
        for shape, members in by_size.items():
            blob = self._blob([inputs[i] for i in members])
            outs = self.timed(lambda: self.batch_session.run(names, {self.model.input_name: blob}), len(members))
            for b, i in enumerate(members):
                outputs[i] = [o.reshape(len(members), -1, *o.shape[1:])[b] for o in outs]
        return outputs

    def _blob(self, images: list[np.ndarray]) -> np.ndarray:
        """insightface's input blob (`_prepare_input_blob`: RGB planes, (x - mean) / std) of
        a batch of same-size images, in a reused buffer: the same floats (its mean and std,
        127.5 and 128, make both steps exact in float32), 3.5x faster than a blob per image
        and a copy of them all (8 frames of 640x288: 16 ms -> 4.6 ms)."""
        m = self.model
        blob = self._input.view((len(images), 3, *images[0].shape[:2]))
        for img, planes in zip(images, blob):  # straight into the blob: no stacked copy first
            for c in range(3):  # BGR in, RGB out
                np.subtract(img[..., 2 - c], np.float32(m.input_mean), out=planes[c], dtype=np.float32)
        blob *= np.float32(1.0 / m.input_std)
        return blob

    def _detect_one(self, inp: np.ndarray, outputs: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """insightface's detection of one padded image: its own network call, or the outputs
        of a batched one decoded by insightface's code."""
        h, w = inp.shape[:2]
        if outputs is None:
            return self.timed(lambda: self.model.detect(inp, input_size=(w, h), det_thresh=self.threshold))
        self.model._session_for_input_size = lambda size: _Replay(outputs)
        self.model._prepare_input_blob = _blob_shape_only
        try:
            return self.model.detect(inp, input_size=(w, h), det_thresh=self.threshold)
        finally:
            del self.model._session_for_input_size, self.model._prepare_input_blob


class ScrfdPersonDetector(ScrfdFaceDetector):
    """insightface's SCRFD person detector (scrfd_person_2.5g): five feature strides up to
    128, so inputs are padded to multiples of 128; its 5 keypoints are dropped."""

    kind = PERSON
    stride = 128


@register("face_detector", "scrfd", auto=0, summary="SCRFD ONNX (faces.detector_weights: scrfd_500m, scrfd_2.5g, det_10g)")
def _scrfd(ctx: BackendContext) -> ScrfdFaceDetector:
    o = ctx.options
    return ScrfdFaceDetector(ctx.weights(o.detector_weights), o.max_side, o.det_threshold, ctx.device, ctx.threads)


@register("person_detector", "scrfd_person", auto=1,
          summary="SCRFD person 2.5G ONNX (insightface model zoo: non-commercial research)")
def _scrfd_person(ctx: BackendContext) -> ScrfdPersonDetector:
    o = ctx.options
    return ScrfdPersonDetector(ctx.weights("scrfd_person_2.5g"), o.max_side, o.det_threshold, ctx.device, ctx.threads)
