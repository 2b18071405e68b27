"""Training FLOPs per token (6N + 12LHQT) reported by ``zoo models -v`` and the benchmarks."""

from zoo.models import build_model
from zoo.models.flops import flops_per_token, training_flops_per_token


def test_transformer_flops_follow_palm_formula():
    model = build_model("transformer_lm", 65, "small")
    config = model.get_config()
    L, H, d, T = config["num_layers"], config["num_heads"], config["d_model"], config["max_length"]
    n_without_positions = model.count_params() - T * d
    expected = 6 * n_without_positions + 12 * L * H * (d // H) * T
    assert training_flops_per_token(model) == expected
    # a shorter sequence only shrinks the attention term
    assert training_flops_per_token(model, seq_len=16) == expected - 12 * L * d * (T - 16)


def test_gpt2_small_sizes_give_nanogpt_figure():
    # nanoGPT's GPT-2 small: N = 123.65M without positions (124.44M - 1024 x 768), T = 1024
    n = 124_439_808 - 1024 * 768
    assert flops_per_token(n, 12, 12, 64, 1024) == 6 * n + 12 * 12 * 12 * 64 * 1024
    assert round(flops_per_token(n, 12, 12, 64, 1024) / 1e6) == 855


def test_recurrent_models_have_only_the_weight_term():
    model = build_model("lstm_lm", 65, "tiny")
    assert training_flops_per_token(model) == 6 * model.count_params()
