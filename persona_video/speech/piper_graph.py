"""Piper's ONNX voice, rewired so that one seed gives one waveform.

A Piper (VITS) voice draws two noise tensors inside its graph with
``RandomNormalLike``: one for the duration predictor and one for the flow.
onnxruntime seeds those from the clock, so the same text sounds a little
different every run, and a request's seed could not reproduce its audio.
:func:`load_seeded` replaces each draw with a slice of a graph input that
the caller fills from ``numpy.random.default_rng(seed)``, and marks the
duration tensor (the ``Ceil`` of the predicted widths) as an output, so the
phoneme alignments come from the same call. Everything else in the graph is
unchanged: same voice, same speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Noise handed to the flow per phoneme id at first, in model frames times channels
#: (speech runs about 3 frames per id); doubled and retried when a phrase needs more.
_FLOW_FRAMES_PER_ID = 8


@dataclass
class SeededPiper:
    """An onnxruntime session over a Piper voice whose noise comes from its inputs."""

    session: object  # onnxruntime.InferenceSession
    noise_inputs: tuple[str, ...]  # in graph order: duration predictor, then flow
    noise_widths: tuple[int, ...]  # channels of each noise tensor (its size per id or per frame)
    hop_length: int
    length_input: str  # (1, 1, num_ids) float32: each phoneme id's length scale

    def run(
        self, ids: list[int], noise: tuple[float, float], lengths: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Speak phoneme ``ids``; returns (audio float32 (num_samples,), samples per id int64 (num_ids,)).

        noise: (noise_scale, noise_w) as in the voice's config; lengths: (num_ids,) length scale
        of each id (the voice's length_scale over the wanted speed: > 1 is slower).
        """
        lengths = np.asarray(lengths, dtype=np.float32).reshape(1, 1, -1)
        if lengths.shape[2] != len(ids):
            raise ValueError(f"{lengths.shape[2]} length scales for {len(ids)} phoneme ids")
        feed = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            # the graph's own length scale is replaced by the per-id one below; the slot stays
            "scales": np.asarray([noise[0], 1.0, noise[1]], dtype=np.float32),
            self.length_input: lengths,
        }
        frames_per_id = _FLOW_FRAMES_PER_ID
        while True:
            rng = np.random.default_rng(seed)
            for name, width in zip(self.noise_inputs, self.noise_widths, strict=True):
                per_id = 1 if name == self.noise_inputs[0] else frames_per_id
                feed[name] = rng.standard_normal(width * per_id * len(ids), dtype=np.float32)
            try:
                audio, widths = self.session.run(None, feed)
            except Exception as exc:  # the flow needs more noise than was given (a very slow phrase)
                if "Reshape" not in str(exc) or frames_per_id >= 512:
                    raise
                frames_per_id *= 4
                continue
            samples = (widths.reshape(-1) * self.hop_length).astype(np.int64)
            return np.asarray(audio, dtype=np.float32).reshape(-1), samples


def load_seeded(model_path: str, hop_length: int) -> SeededPiper:
    """Load a Piper voice model with its noise draws turned into inputs (needs ``onnx``)."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    model = onnx.load(model_path)
    graph = model.graph
    nodes = []
    noise_inputs: list[str] = []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        name = f"persona_video_noise_{len(noise_inputs)}"
        noise_inputs.append(name)
        like, out = node.input[0], node.output[0]
        # out = reshape(noise[: size(like)], shape(like))
        nodes += [
            helper.make_node("Shape", [like], [f"{name}/shape"]),
            helper.make_node("Size", [like], [f"{name}/size"]),
            helper.make_node("Unsqueeze", [f"{name}/size", f"{name}/axis"], [f"{name}/end"]),
            helper.make_node("Slice", [name, f"{name}/start", f"{name}/end"], [f"{name}/flat"]),
            helper.make_node("Reshape", [f"{name}/flat", f"{name}/shape"], [out]),
        ]
        graph.initializer.extend(
            [
                helper.make_tensor(f"{name}/axis", TensorProto.INT64, [1], [0]),
                helper.make_tensor(f"{name}/start", TensorProto.INT64, [1], [0]),
            ]
        )
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None]))
    ceil = [node for node in nodes if node.op_type == "Ceil"]
    if len(noise_inputs) != 2 or len(ceil) != 1:
        raise ValueError(
            f"{model_path} is not a Piper VITS voice as expected "
            f"({len(noise_inputs)} noise draws and {len(ceil)} duration tensors; want 2 and 1)"
        )
    # the widths are exp(logw) * mask * length_scale, then ceil: the length scale (a scalar taken
    # from `scales`) becomes a per-id input, so each word can have its own pace
    producer = {out: node for node in nodes for out in node.output}
    widths = producer.get(ceil[0].input[0])
    constants = {tensor.name: tensor for tensor in graph.initializer}
    inputs = list(widths.input) if widths is not None else []
    scale_slot = [i for i, name in enumerate(inputs) if _reads_scale(producer, constants, name, 1)]
    if widths is None or widths.op_type != "Mul" or len(scale_slot) != 1:
        raise ValueError(f"{model_path} is not a Piper VITS voice as expected (no length scale before the durations)")
    length_input = "persona_video_length_scales"
    widths.input[scale_slot[0]] = length_input
    graph.input.append(helper.make_tensor_value_info(length_input, TensorProto.FLOAT, [1, 1, None]))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.output.append(helper.make_tensor_value_info(ceil[0].output[0], TensorProto.FLOAT, None))
    # one thread, as the hibari voice: the pipeline runs speech beside the renderer and x264, where
    # onnxruntime's second thread cost more CPU than it saved (27 s of speech: 1.8 s of CPU on two
    # threads, 1.4 s on one)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    # the duration predictor's noise has 2 channels per id; the flow's has one per latent channel
    flow_channels = _flow_channels(model)
    return SeededPiper(session, tuple(noise_inputs), (2, flow_channels), hop_length, length_input)


def _reads_scale(producer: dict, constants: dict, tensor: str, index: int) -> bool:
    """Whether ``tensor`` is entry ``index`` of the ``scales`` input: a Gather at a constant
    index (an initializer or a Constant node)."""
    from onnx import numpy_helper

    gather = producer.get(tensor)
    if gather is None or gather.op_type != "Gather" or gather.input[0] != "scales":
        return False
    value = constants.get(gather.input[1])
    node = producer.get(gather.input[1])
    if value is None and node is not None and node.op_type == "Constant":
        value = next((a.t for a in node.attribute if a.name == "value"), None)
    return value is not None and int(numpy_helper.to_array(value).reshape(-1)[0]) == index


def _flow_channels(model) -> int:
    """Latent channels of the flow (192 in every Piper voice size), read from the prior's projection."""
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if tensor.name.endswith("proj.weight") and "enc_p" in tensor.name:
            return int(numpy_helper.to_array(tensor).shape[0]) // 2
    return 192
