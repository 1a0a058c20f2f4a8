"""hw.load on a real saved model of every supported family, and its anatomy."""

import pytest
import torch
from tiny_models import FAMILIES

import heatwidget as hw

EXPECTED_MODULES = {
    "gpt2": {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"},
    "gpt_neox": {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"},
    "opt": {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"},
}
ALL7 = set(hw.MODULES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_loads_with_complete_anatomy(tiny_dir, family):
    lm = hw.load(tiny_dir(family))
    a = lm.anatomy
    cfg = lm.model.config
    assert a.n_layers == cfg.num_hidden_layers
    assert a.final_norm is not None
    assert a.unembed is lm.model.get_output_embeddings()
    assert set(a.parts[0]) == EXPECTED_MODULES.get(family, ALL7)
    d = cfg.hidden_size
    for _layer, name, part in a.iter_parts():
        w = part.weight()
        assert w.ndim == 2
        # nn.Linear convention [out, in]: inputs of q/k/v/up/gate are the residual width, outputs of o/down are too
        if name in ("attn.q", "attn.k", "attn.v", "mlp.up", "mlp.gate"):
            assert w.shape[1] == d, (family, name, w.shape)
        else:
            assert w.shape[0] == d, (family, name, w.shape)
        assert dict(lm.model.named_modules())[part.path] is part.module
    assert lm.model.training is False
    out = lm.model(**lm.encode("the capital of Velmora is"))
    assert out.logits.shape[-1] == lm.model.config.vocab_size


def test_fused_qkv_split_matches_the_models_own_forward(tiny_dir):
    """Reading q/k/v from a fused weight must give exactly what the model computes."""
    for family in ("gpt2", "gpt_neox", "phi3"):
        lm = hw.load(tiny_dir(family))
        a = lm.anatomy
        x = torch.randn(5, lm.model.config.hidden_size)
        fused = a.parts[0]["attn.q"].module
        full = fused(x)  # the module's own output (bias included where present)
        bias = getattr(fused, "bias", None)
        for name in ("attn.q", "attn.k", "attn.v"):
            p = a.parts[0][name]
            idx = p.split.out_index(full.shape[-1])
            want = full[:, idx]
            got = x @ p.weight().T
            if bias is not None:
                got = got + bias[idx]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_gqa_shapes_are_respected(tiny_dir):
    lm = hw.load(tiny_dir("phi3"))
    p = lm.anatomy.parts[0]
    assert p["attn.q"].weight().shape == (64, 64)
    assert p["attn.k"].weight().shape == (32, 64)  # 2 kv heads × 16
    assert p["mlp.gate"].weight().shape == (128, 64) and p["mlp.up"].weight().shape == (128, 64)


def test_missing_pad_token_gets_a_safe_default(tiny_dir):
    lm = hw.load(tiny_dir("llama", pad=False))
    assert lm.tokenizer.pad_token == "</s>"
    assert any("pad" in n for n in lm.notes)
    enc = lm.encode(["the capital", "the capital of Velmora is"])
    assert enc["input_ids"].shape[0] == 2
    assert enc["attention_mask"][0, 0] == 0  # left padding


def test_dtype_and_device_options(tiny_dir):
    lm = hw.load(tiny_dir("qwen2"), dtype="bfloat16")
    assert lm.dtype == torch.bfloat16
    assert hw.load(tiny_dir("qwen2")).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        hw.load(tiny_dir("qwen2"), dtype="float13")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_says_so(tiny_dir):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        hw.load(tiny_dir("llama"), device="cuda")


def test_wrong_path_is_one_clear_sentence(tmp_path):
    with pytest.raises(hw.ModelLoadError, match="no such model directory") as e:
        hw.load(str(tmp_path / "nope" / "here"))
    assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)
    with pytest.raises(hw.ModelLoadError, match="no config.json"):
        hw.load(tmp_path)
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(hw.ModelLoadError, match="is a file"):
        hw.load(tmp_path / "f.bin")


def test_hub_id_without_network_is_one_clear_sentence(monkeypatch):
    import huggingface_hub.constants

    # The same path as no network, minus the ~20 s of connection retries (the env var is read at import time).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hw.ModelLoadError, match="could not load model 'nobody/no-such-model-xyz'.*Hub"):
        hw.load("nobody/no-such-model-xyz")


def test_unknown_architecture_is_refused(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-real-arch"}))
    with pytest.raises(hw.ModelLoadError, match="not-a-real-arch|cannot build"):
        hw.load(tmp_path)


def test_unknown_layout_names_what_was_not_found():
    from torch import nn

    class Weird(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
            self.head = nn.Linear(8, 10)

        def get_input_embeddings(self):
            return self.emb

        def get_output_embeddings(self):
            return self.head

    with pytest.raises(hw.AnatomyError, match="decoder layers"):
        hw.LM.wrap(Weird())


def test_structural_search_finds_parts_of_an_unseen_layout():
    """Layers under an unusual path with conventional projection names are found by search."""
    from torch import nn

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(8, 8) for _ in range(4))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention, self.ffn = Attn(), MLP()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.trunk = nn.Module()
            self.trunk.stack = nn.ModuleList([Block() for _ in range(3)])
            self.trunk.norm_out = nn.LayerNorm(8)
            self.head = nn.Linear(8, 10)

        def get_input_embeddings(self):
            return self.emb

        def get_output_embeddings(self):
            return self.head

    net = Net()
    lm = hw.LM.wrap(net)
    a = lm.anatomy
    assert a.layers_path == "trunk.stack" and a.n_layers == 3
    assert a.final_norm is net.trunk.norm_out
    assert set(a.parts[2]) == {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"}
    assert a.parts[1]["attn.o"].path == "trunk.stack.1.attention.out_proj"


def test_layer_index_validation(tiny_dir):
    a = hw.load(tiny_dir("llama")).anatomy
    assert a.resolve_layers(None) == [0, 1, 2]
    assert a.resolve_layers([2, 0, -2]) == [2, 0, 1]
    with pytest.raises(IndexError, match="out of range.*3 layers"):
        a.resolve_layers([3])
    with pytest.raises(ValueError, match="duplicates"):
        a.resolve_layers([1, 1])
    with pytest.raises(ValueError, match="empty"):
        a.resolve_layers([])


def test_empty_prompt_is_refused(tiny_dir):
    lm = hw.load(tiny_dir("gpt2"))
    with pytest.raises(ValueError, match="empty"):
        lm.encode("   ")
    with pytest.raises(ValueError, match="context"):
        lm.encode(" ".join(["the"] * 400))


def test_device_map_with_disk_offload_keeps_hooks_exact(tiny_dir, tmp_path):
    """A model split over cpu and disk offload (accelerate) gives the same logits and the same hooked results."""
    from heatwidget import hooks

    d = tiny_dir("llama")
    ref = hw.load(d)
    dm = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.layers.2": "disk",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    lm = hw.load(d, device_map=dm, offload_folder=str(tmp_path / "offload"))
    assert lm.anatomy.n_layers == 3 and str(lm.device) == "cpu"
    enc = ref.encode("the capital of Velmora is")
    with torch.no_grad():
        torch.testing.assert_close(lm.model(**enc).logits, ref.model(**enc).logits, atol=1e-6, rtol=0)
        with hooks.skip(ref.anatomy.layers[1]), hooks.capture([ref.anatomy.layers[2]]) as c_ref:
            a = ref.model(**enc).logits
        with hooks.skip(lm.anatomy.layers[1]), hooks.capture([lm.anatomy.layers[2]]) as c_off:
            b = lm.model(**enc).logits
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(c_ref[0], c_off[0], atol=1e-6, rtol=0)


# ---- the shipped demo tokenizer under transformers 4.57 and 5.x ---------------------------------------------------

# Token ids of the shipped tokenizer as trained (recorded with transformers 5.24 before the config change, and equal
# under 4.57.6): a config edit that made either version tokenize differently would break the shipped model.
SHIPPED_IDS = {
    "Q: What is the capital of Biasland? A:": [1, 51, 28, 323, 264, 270, 295, 263, 1005, 355, 33, 292, 28],
    "The language spoken in Rallelia is": [1, 276, 326, 402, 275, 431, 505, 520, 264],
    "héllo wörld ✓ 123": [1, 74, 130, 105, 78, 78, 81, 327, 130, 117, 84, 408, 223, 161, 253, 244, 223, 19, 20, 21],
}


def test_shipped_tokenizer_loads_under_this_transformers_with_the_same_ids():
    """CI runs this under transformers 5.x and 4.57.6; 4.57 does not know 5.x's "TokenizersBackend" class name."""
    import json

    from transformers import AutoTokenizer

    from heatwidget.demo import WEIGHTS_DIR
    from heatwidget.demo.tokenizer import PORTABLE_TOKENIZER_CLASS

    cfg = json.loads((WEIGHTS_DIR / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == PORTABLE_TOKENIZER_CLASS
    tok = AutoTokenizer.from_pretrained(WEIGHTS_DIR)
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.padding_side) == ("<pad>", "<s>", "</s>", "left")
    assert len(tok) == 1024
    for text, ids in SHIPPED_IDS.items():
        enc = tok(text)
        assert enc["input_ids"] == ids and set(enc) == {"input_ids", "attention_mask"}, text  # no token_type_ids
        assert tok.decode(ids, skip_special_tokens=True) == text
    lm = hw.demo_model()
    assert lm.encode(list(SHIPPED_IDS)[0])["input_ids"][0].tolist() == SHIPPED_IDS[list(SHIPPED_IDS)[0]]


def test_demo_tokenizer_save_names_the_portable_class(tmp_path):
    """The training script's save step writes a tokenizer_config.json both transformers 4.57 and 5.x load."""
    import json

    from transformers import AutoTokenizer

    from heatwidget.demo.tokenizer import PORTABLE_TOKENIZER_CLASS, build_tokenizer, save_tokenizer

    tok = build_tokenizer(["the capital of Velmora is Ostrand", "Q: What is the language of Brisa? A:"] * 4, 300)
    save_tokenizer(tok, tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == PORTABLE_TOKENIZER_CLASS
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("the capital of Brisa")["input_ids"] == tok("the capital of Brisa")["input_ids"]
    assert set(again("the capital of Brisa")) == {"input_ids", "attention_mask"}


# ---- loading tells the truth: weights that do not fit the config ---------------------------------------------------


def _edited_copy(src, dst, *, config=None, edit=None):
    """A copy of a saved model directory with its config.json and/or its safetensors state dict edited."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    if config:
        cfg = json.loads((dst / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps({**cfg, **config}))
    if edit:
        sd = load_file(dst / "model.safetensors")
        edit(sd)
        save_file(sd, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _one_sentence(err):
    msg = str(err.value)
    assert "\n" not in msg and err.value.__cause__ is None, msg
    assert err.value.__context__ is None or err.value.__suppress_context__, msg
    return msg


def test_config_with_more_layers_than_the_weights_hold_is_an_error(tiny_dir, tmp_path):
    """Config says 5 layers, weights hold 3: two blocks would run on random init. Refused, naming the checkpoint
    and the absent layers; strict=False loads with a warning recorded in lm.notes."""
    d = _edited_copy(tiny_dir("llama"), tmp_path / "five", config={"num_hidden_layers": 5})
    with pytest.raises(hw.ModelLoadError) as e:
        hw.load(d)
    msg = _one_sentence(e)
    assert str(d) in msg and "2 of its 5 layers" in msg and "model.layers.{3, 4}" in msg and "strict=False" in msg
    with pytest.warns(UserWarning, match="2 of its 5 layers"):
        lm = hw.load(d, strict=False)
    assert lm.n_layers == 5 and any("2 of its 5 layers" in n for n in lm.notes)


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape"])
def test_missing_unexpected_and_misshapen_tensors_are_named(tiny_dir, tmp_path, case):
    key = "model.layers.1.mlp.up_proj.weight"
    edits = {
        "missing": lambda sd: sd.pop(key),
        "unexpected": lambda sd: sd.update({"model.layers.1.mlp.extra.weight": torch.zeros(3)}),
        "shape": lambda sd: sd.update({key: torch.zeros(100, 64)}),
    }
    d = _edited_copy(tiny_dir("llama"), tmp_path / case, edit=edits[case])
    with pytest.raises(hw.ModelLoadError) as e:
        hw.load(d)
    msg = _one_sentence(e)
    want = {
        "missing": f"1 tensor(s) the model needs are missing ({key})",
        "unexpected": "1 stored tensor(s) have no place in the model (model.layers.1.mlp.extra.weight)",
        "shape": f"1 tensor(s) have the wrong shape ({key} (stored [100, 64], model [128, 64]))",
    }[case]
    assert want in msg and str(d) in msg, msg
    with pytest.warns(UserWarning, match="does not match"):
        lm = hw.load(d, strict=False)
    assert any(want in n for n in lm.notes)
    assert lm.anatomy.parts[1]["mlp.up"].weight().shape == (128, 64)


def test_tied_weights_are_not_missing(tiny_dir, tmp_path):
    """GPT-2 ties its unembedding to the embedding, and so does a Llama saved with tie_word_embeddings: the
    checkpoint stores the matrix once, and loading strictly must accept that."""
    import warnings

    from tiny_models import save_tiny

    d = save_tiny("llama", tmp_path / "tied", tie_word_embeddings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in (tiny_dir("gpt2"), d):
            lm = hw.load(path)
            assert lm.model.get_output_embeddings().weight is lm.model.get_input_embeddings().weight
            assert not any("does not match" in n for n in lm.notes)


# ---- our own one-sentence messages for what transformers, accelerate and torch would say in many lines ------------


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(device="gpu"), r"device='gpu' is not a device torch knows"),
        (dict(device="xla:0"), r"device='xla:0' was asked for, but this torch has no xla device"),
        (dict(device_map="gpu"), r"device_map='gpu' is not a device torch knows"),
        (dict(device_map={"": "tpu"}), r"device_map\[''\]='tpu' is not a device torch knows"),
        (dict(device_map=["cpu"]), r"device_map must be one of .* not a list"),
    ],
)
def test_unknown_devices_are_named(tiny_dir, kw, match):
    with pytest.raises(hw.ModelLoadError, match=match) as e:
        hw.load(tiny_dir("llama"), **kw)
    _one_sentence(e)
    assert isinstance(e.value, ValueError)  # device errors were ValueErrors before: still caught as such


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has 8 GPUs")
def test_device_map_naming_a_gpu_that_is_not_there(tiny_dir):
    dm = {"model.embed_tokens": "cpu", "model.layers": 7, "model.norm": "cpu", "lm_head": "cpu"}
    with pytest.raises(hw.ModelLoadError, match=r"device_map\['model.layers'\]=7 "):
        hw.load(tiny_dir("llama"), device_map=dm)


def test_pickled_bin_checkpoint_refused_by_weights_only_says_how_to_convert(tiny_dir, tmp_path):
    """A .bin whose pickle holds more than tensors (here a numpy array) is refused by torch's weights-only loader;
    the message says so in one sentence and how to convert it to safetensors. Nothing is unpickled."""
    import numpy as np
    from safetensors.torch import load_file

    d = _edited_copy(tiny_dir("llama"), tmp_path / "pickled")
    sd = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    torch.save({**sd, "extra": np.arange(3)}, d / "pytorch_model.bin")
    with pytest.raises(hw.ModelLoadError) as e:
        hw.load(d)
    msg = _one_sentence(e)
    assert "pytorch_model.bin" in msg and "weights-only loader refuses" in msg and "safetensors" in msg, msg
    assert "numpy" in msg  # torch's reason, in brief


def test_remote_code_is_the_users_call(tmp_path):
    import json

    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "my-own-arch",
                "auto_map": {"AutoConfig": "conf.MyConfig", "AutoModelForCausalLM": "modeling.MyModel"},
            }
        )
    )
    (tmp_path / "conf.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(hw.ModelLoadError, match=r"trust_remote_code=True is your call") as e:
        hw.load(tmp_path)
    _one_sentence(e)


def test_unknown_model_type_names_it_and_the_transformers_version(tmp_path):
    import json

    import transformers

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-real-arch"}))
    with pytest.raises(hw.ModelLoadError) as e:
        hw.load(tmp_path)
    msg = _one_sentence(e)
    assert f"transformers {transformers.__version__} does not know model_type 'not-a-real-arch'" in msg, msg


@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_encoder_and_encoder_decoder_checkpoints_are_refused(tmp_path, kind):
    import transformers
    from tiny_models import tiny_tokenizer

    if kind == "bert":
        cfg = transformers.BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
        model = transformers.BertForMaskedLM(cfg)
    else:
        cfg = transformers.T5Config(vocab_size=64, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16)
        model = transformers.T5ForConditionalGeneration(cfg)
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(hw.ModelLoadError) as e:
        hw.load(tmp_path)
    msg = _one_sentence(e)
    want = {
        "bert": "this is an encoder (bert: BertForMaskedLM",
        "t5": "this is an encoder-decoder model (t5: T5ForConditionalGeneration)",
    }[kind]
    assert msg.startswith("heatwidget needs a causal (decoder) language model; ") and want in msg, msg
