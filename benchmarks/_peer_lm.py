"""The byte-level GPT of ``benchmarks.post_training`` as a Hugging Face GPT-2 twin, both ways.

``benchmarks.post_training.language_model`` is a GPT-2 block for block: token and learned
position embeddings added, pre-norm blocks (layer norm, causal self-attention over
``heads`` heads scaled by ``1/sqrt(head_dim)``, residual add; layer norm, ``Dense`` up with
exact GELU, ``Dense`` down, residual add), a final layer norm and an untied bias-free head.
Its twin is ``transformers.GPT2LMHeadModel`` built from a config (nothing downloaded):

- ``vocab_size=256`` (bytes), ``n_positions=context``, ``n_embd=width``, ``n_head=heads``,
  ``n_layer=blocks``, ``n_inner=ffn``;
- ``activation_function="gelu"`` (exact, as Keras's ``gelu``; GPT-2's default ``gelu_new`` is
  the tanh approximation), ``layer_norm_epsilon=1e-3`` (Keras's default), every dropout 0,
  ``tie_word_embeddings=False``, eager attention;
- GPT-2's ``Conv1D`` stores its weight ``[in, out]`` as Keras's ``Dense`` kernel does, so the
  kernels copy as they are; ``c_attn`` is query, key and value fused along the outputs.

:func:`linear_twin` turns every ``Conv1D`` into the ``torch.nn.Linear`` it computes (weight
transposed), which is what llm-compressor prunes: in 0.14 its SparseGPT and Wanda modifiers
hook only ``PRUNABLE_LAYER_TYPES`` (``Linear``, ``Conv1d/2d/3d``) inside the targets, so
GPT-2's own ``transformers.Conv1D`` layers are left dense without an error, whatever the
targets (checked: ``targets=["Conv1D"]`` or a regex on c_attn/c_proj/c_fc prunes nothing).
On ``Linear`` layers, as in every current Hugging Face decoder, it runs as documented.
"""

import numpy as np

__all__ = ["gpt2_config", "keras_to_gpt2", "gpt2_to_keras", "linear_twin", "logits",
           "max_difference", "perplexity", "byte_tokenizer", "prunable_names"]


def gpt2_config(*, context, width, heads, blocks, ffn, **_):
    """The ``GPT2Config`` of the byte LM with these sizes (the keys of post_training's cfg)."""
    import transformers

    return transformers.GPT2Config(
        vocab_size=256, n_positions=context, n_embd=width, n_layer=blocks, n_head=heads,
        n_inner=ffn, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=1e-3, tie_word_embeddings=False,
        scale_attn_weights=True, bos_token_id=None, eos_token_id=None, pad_token_id=None,
        use_cache=False)


def _blocks(model):
    return len([layer for layer in model.layers if layer.name.startswith("query_")])


def _get(model, name):
    return [np.asarray(w) for w in model.get_layer(name).get_weights()]


def keras_to_gpt2(model, cfg):
    """A ``GPT2LMHeadModel`` (eval mode, float32) holding the Keras byte LM's weights."""
    import torch
    import transformers

    config = gpt2_config(**cfg)
    config._attn_implementation = "eager"
    net = transformers.GPT2LMHeadModel(config).eval()

    def put(parameter, value):
        value = torch.as_tensor(np.ascontiguousarray(value, dtype=np.float32))
        if tuple(parameter.shape) != tuple(value.shape):
            raise ValueError(f"shape {tuple(value.shape)} for a parameter of "
                             f"{tuple(parameter.shape)}")
        parameter.copy_(value)

    with torch.no_grad():
        put(net.transformer.wte.weight, _get(model, "embed")[0])
        put(net.transformer.wpe.weight, _get(model, "positions")[0])
        for i, block in enumerate(net.transformer.h):
            put(block.ln_1.weight, _get(model, f"ln_{i}_a")[0])
            put(block.ln_1.bias, _get(model, f"ln_{i}_a")[1])
            q, k, v = (_get(model, f"{n}_{i}") for n in ("query", "key", "value"))
            put(block.attn.c_attn.weight, np.concatenate([q[0], k[0], v[0]], axis=1))
            put(block.attn.c_attn.bias, np.concatenate([q[1], k[1], v[1]]))
            put(block.attn.c_proj.weight, _get(model, f"out_{i}")[0])
            put(block.attn.c_proj.bias, _get(model, f"out_{i}")[1])
            put(block.ln_2.weight, _get(model, f"ln_{i}_f")[0])
            put(block.ln_2.bias, _get(model, f"ln_{i}_f")[1])
            put(block.mlp.c_fc.weight, _get(model, f"ffn_up_{i}")[0])
            put(block.mlp.c_fc.bias, _get(model, f"ffn_up_{i}")[1])
            put(block.mlp.c_proj.weight, _get(model, f"ffn_down_{i}")[0])
            put(block.mlp.c_proj.bias, _get(model, f"ffn_down_{i}")[1])
        put(net.transformer.ln_f.weight, _get(model, "ln_final")[0])
        put(net.transformer.ln_f.bias, _get(model, "ln_final")[1])
        head = _get(model, "head")
        if len(head) != 1:
            raise ValueError("the Keras head has a bias; GPT-2's lm_head has none")
        put(net.lm_head.weight, head[0].T)
    return net


def _kernel(module):
    """A Conv1D's or Linear's weight as a Keras ``[in, out]`` kernel (numpy)."""
    import torch

    weight = module.weight.detach().cpu().numpy()
    return weight.T if isinstance(module, torch.nn.Linear) else weight


def gpt2_to_keras(net, model):
    """Copy the prunable kernels and biases of the twin ``net`` (Conv1D or Linear) back into
    the Keras byte LM ``model`` (in place; the embeddings, norms and head are left as they
    are, since neither tool prunes them); returns ``model``."""
    width = net.config.n_embd
    for i, block in enumerate(net.transformer.h):
        kernel = _kernel(block.attn.c_attn)
        bias = block.attn.c_attn.bias.detach().cpu().numpy()
        for j, name in enumerate(("query", "key", "value")):
            part = slice(j * width, (j + 1) * width)
            model.get_layer(f"{name}_{i}").set_weights([kernel[:, part], bias[part]])
        for name, module in ((f"out_{i}", block.attn.c_proj), (f"ffn_up_{i}", block.mlp.c_fc),
                             (f"ffn_down_{i}", block.mlp.c_proj)):
            model.get_layer(name).set_weights([_kernel(module),
                                               module.bias.detach().cpu().numpy()])
    return model


def linear_twin(net):
    """``net`` with every ``transformers.Conv1D`` replaced (in place) by the equal
    ``torch.nn.Linear``; returns ``net``."""
    import torch
    from transformers.pytorch_utils import Conv1D

    for block in net.transformer.h:
        for owner, name in ((block.attn, "c_attn"), (block.attn, "c_proj"),
                            (block.mlp, "c_fc"), (block.mlp, "c_proj")):
            conv = getattr(owner, name)
            if not isinstance(conv, Conv1D):
                continue
            inputs, outputs = conv.weight.shape
            linear = torch.nn.Linear(inputs, outputs)
            with torch.no_grad():
                linear.weight.copy_(conv.weight.t())
                linear.bias.copy_(conv.bias)
            setattr(owner, name, linear)
    return net


def prunable_names(net):
    """The twin's modules that both tools prune (attention projections and the FFN)."""
    return [f"transformer.h.{i}.{part}" for i in range(len(net.transformer.h))
            for part in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]


def logits(net, x, batch_size=64):
    """The twin's logits ``[batch, context, 256]`` for ``x`` (numpy int)."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            ids = torch.as_tensor(np.asarray(x[start:start + batch_size], np.int64))
            out.append(net(input_ids=ids).logits.float().numpy())
    return np.concatenate(out)


def max_difference(model, net, x):
    """Largest absolute difference between the Keras LM's and the twin's logits on ``x``."""
    ours = np.asarray(model.predict(x, batch_size=64, verbose=0))
    return float(np.max(np.abs(ours - logits(net, x))))


def perplexity(net, x, y):
    """``exp`` of the twin's mean next-byte cross-entropy on ``(x, y)`` (float64 softmax)."""
    z = logits(net, x).astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, np.asarray(y)[..., None], axis=-1)
    return float(np.exp(-picked.mean()))


def _bytes_to_unicode():
    """GPT-2's table of the 256 printable characters that stand for the bytes."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def byte_tokenizer():
    """A byte-level tokenizer (byte ``b`` is token ``b``), built here from ``tokenizers``:
    llm-compressor's ``oneshot`` asks for a processor whenever it is given calibration data,
    and would otherwise look one up on the Hub by the model's name. The calibration data is
    passed already tokenized; this tokenizer only has to exist."""
    import tokenizers
    import transformers
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {char: byte for byte, char in _bytes_to_unicode().items()}
    core = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = ByteLevel(add_prefix_space=False)
    core.decoder = tokenizers.decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core)
