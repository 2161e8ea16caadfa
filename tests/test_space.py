"""The search space: validation, round trips, canonical form, counting, sampling, evolution and encodings."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ofakit.ofa_core.errors import ArchError, UserError
from ofakit.ofa_core.space import (MAX_DEPTH, N_BLOCKS, ArchBatch, ArchConfig, crossover_batch, encode_general, encode_ofa,
                            load_arch, mutate_batch, sample_arch, sample_batch, space_for_width)

GOOD = {"ks": [3, 5, 7, 3] * 5, "e": [3, 4, 6, 6] * 5, "d": [2, 3, 4, 2, 3], "r": 160}


def with_(**kw):
    d = dict(GOOD)
    d.update(kw)
    return d


@pytest.mark.parametrize("data, field", [
    (with_(ks=[3, 5, 4] + [3] * 17), "ks[2]"),
    (with_(ks=[3] * 19), "ks"),
    (with_(ks="3,5,7"), "ks"),
    (with_(e=[3] * 19 + [5]), "e[19]"),
    (with_(e=[3] * 21), "e"),
    (with_(e=[3.5] + [3] * 19), "e[0]"),
    (with_(d=[2, 3, 4, 1, 2]), "d[3]"),
    (with_(d=[2, 3, 4, 2]), "d"),
    (with_(r=7), "r"),
    (with_(r=[160, 176]), "r"),
    (with_(r="160"), "r"),
    (with_(width=0), "width"),
    (with_(width="wide"), "width"),
    (with_(colour=1), "colour"),
    ({k: v for k, v in GOOD.items() if k != "d"}, "d"),
])
def test_bad_field_is_named(data, field):
    with pytest.raises(ArchError) as err:
        ArchConfig.from_ofa_dict(data)
    assert str(err.value).startswith(f"{field}:"), str(err.value)
    assert isinstance(err.value, UserError)


def test_non_object_json_is_refused():
    with pytest.raises(ArchError, match="arch"):
        ArchConfig.from_json("[1, 2, 3]")
    with pytest.raises(ArchError, match="not valid JSON"):
        ArchConfig.from_json("{'ks': }")


def test_r_as_one_element_list_and_float_ints_accepted():
    a = ArchConfig.from_ofa_dict(with_(r=[176], ks=[3.0] * 20))
    assert a.r == 176 and a.ks == (3,) * 20


def test_json_and_ofa_dict_round_trip():
    rng = np.random.default_rng(1)
    for width in (1.0, 1.2):
        for a in sample_batch(rng, 20, space_for_width(width)).to_configs():
            b = ArchConfig.from_json(a.to_json())
            assert (b.ks, b.e, b.d, b.r, b.width) == (a.ks, a.e, a.d, a.r, a.width)
            c = ArchConfig.from_ofa_dict(json.loads(json.dumps(a.to_ofa_dict())), width=width)
            assert (c.ks, c.e, c.d, c.r, c.width) == (a.ks, a.e, a.d, a.r, a.width)
            assert a.to_ofa_dict()["r"] == [a.r]


def test_canonical_equality_ignores_skipped_blocks():
    a = ArchConfig.from_ofa_dict(GOOD)
    ks = list(a.ks)
    ks[2] = 7 if ks[2] != 7 else 5  # stage 0 has depth 2: block 2 is skipped
    b = ArchConfig(tuple(ks), a.e, a.d, a.r)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.canonical() == a and a.canonical().ks[2] == 3
    ks[0] = 7 if ks[0] != 7 else 5  # block 0 runs
    assert ArchConfig(tuple(ks), a.e, a.d, a.r) != a
    assert ArchConfig(a.ks, a.e, a.d, a.r + 4) != a
    assert ArchConfig(a.ks, a.e, a.d, a.r, 1.2) != a


def test_exact_count():
    spec = space_for_width(1.0)
    assert 9 ** 2 + 9 ** 3 + 9 ** 4 == 7371
    n = spec.count_subnets()
    assert n == 7371 ** 5
    assert abs(n / 2.18e19 - 1) < 0.005
    assert spec.count_subnets(with_resolutions=True) == n * 25
    assert space_for_width(1.2).count_subnets() == n


def test_seeded_sampling_is_reproducible_and_valid():
    a = sample_batch(np.random.default_rng(7), 200)
    b = sample_batch(np.random.default_rng(7), 200)
    c = sample_batch(np.random.default_rng(8), 200)
    for f in ("ks", "e", "d", "r"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.ks, c.ks)
    assert set(np.unique(a.ks)) == {3, 5, 7} and set(np.unique(a.e)) == {3, 4, 6}
    assert set(np.unique(a.d)) == {2, 3, 4} and set(np.unique(a.r)) <= set(range(128, 225, 4))
    assert len(a.to_configs()) == 200  # every sample passes validation
    assert sample_arch(np.random.default_rng(3), resolutions=[144]).r == 144


def test_mutation_and_crossover_stay_valid():
    rng = np.random.default_rng(0)
    pop = sample_batch(rng, 100, resolutions=[160, 192, 224])
    m = mutate_batch(rng, pop, prob=0.5)
    assert len(m.to_configs()) == 100 and set(np.unique(m.r)) <= {160, 192, 224}
    assert 0.3 < np.mean(m.ks != pop.ks) < 0.5  # half re-drawn, of which two thirds change
    assert np.array_equal(mutate_batch(rng, pop, prob=0.0).ks, pop.ks)
    other = sample_batch(rng, 100, resolutions=[160, 192, 224])
    x = crossover_batch(rng, pop, other)
    assert len(x.to_configs()) == 100
    assert np.all((x.ks == pop.ks) | (x.ks == other.ks)) and np.all((x.d == pop.d) | (x.d == other.d))


def test_encode_ofa_shape_and_ones():
    b = sample_batch(np.random.default_rng(2), 50, resolutions=[160, 176, 224])
    enc = encode_ofa(b)
    assert enc.shape == (50, 128) and set(np.unique(enc)) <= {0.0, 1.0}
    assert np.array_equal(enc.sum(axis=1), 2 * b.d.sum(axis=1) + 1)
    a = b.to_configs()[0]
    row = enc[0]
    for blk in range(N_BLOCKS):
        on = blk % MAX_DEPTH < a.d[blk // MAX_DEPTH]
        assert row[blk * 3 + (3, 5, 7).index(a.ks[blk])] == on
        assert row[60 + blk * 3 + (3, 4, 6).index(a.e[blk])] == on
    assert row[120 + (a.r - 112) // 16] == 1
    assert np.array_equal(encode_ofa(b.canonical()), enc)
    assert encode_general(b).shape == (50, 137)


def test_encode_general_layout():
    b = sample_batch(np.random.default_rng(6), 30, resolutions=[128, 176, 224])
    enc = encode_general(b)
    assert np.array_equal(enc[:, :120], encode_ofa(b)[:, :120])  # the same block one-hots as OFA's
    for row, a in zip(enc, b.to_configs()):
        assert [row[120 + s * 3 + (2, 3, 4).index(a.d[s])] for s in range(5)] == [1.0] * 5
        assert row[120:135].sum() == 5
        x = (a.r - 128) / 96
        assert row[135] == pytest.approx(x) and row[136] == pytest.approx(x * x)
    assert np.array_equal(encode_general(b.canonical()), enc)


@pytest.mark.parametrize("field, value, message", [
    ("d", 1, r"d: 1 is not one of \[2, 3, 4\]"), ("d", 5, r"d: 5 is not one of"),
    ("ks", 0, r"ks: 0 is not one of \[3, 5, 7\]"), ("e", 7, r"e: 7 is not one of \[3, 4, 6\]")])
def test_encoders_reject_values_outside_the_choices(field, value, message):
    b = sample_batch(np.random.default_rng(7), 5)
    getattr(b, field)[4, -1] = value  # the last block may be skipped: still checked
    for encode in (encode_ofa, encode_general):
        with pytest.raises(ArchError, match=message):
            encode(b)
    b = sample_batch(np.random.default_rng(7), 5, resolutions=[1100])
    with pytest.raises(ArchError, match="32..1024"):
        encode_general(b)


def test_batch_config_round_trip():
    b = sample_batch(np.random.default_rng(4), 10)
    c = ArchBatch.from_configs(b.to_configs())
    assert all(np.array_equal(getattr(b, f), getattr(c, f)) for f in ("ks", "e", "d", "r"))


def test_load_arch_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ArchError, match="nope.json"):
        load_arch(str(missing))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArchError, match=r"bad\.json: arch: not valid JSON"):
        load_arch(str(bad))
    field = tmp_path / "field.json"
    field.write_text(json.dumps(with_(d=[2, 3, 4, 5, 2])))
    with pytest.raises(ArchError, match=r"field\.json: d\[3\]"):
        load_arch(str(field))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(with_(r=[224])))
    assert load_arch(str(good), width=1.2).width == 1.2
