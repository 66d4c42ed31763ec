"""RandomSampler: counts, fractions, ordering, uniformity, seeding, add_gt_as_proposals."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from kdet.core import AssignResult, RandomSampler, add_gt_as_proposals
from kdet.errors import KdetError


def assignment(gt_inds):
    gt_inds = np.asarray(gt_inds, np.int32)
    labels = np.where(gt_inds > 0, gt_inds % 3, -1).astype(np.int32)
    return AssignResult(tf.constant(gt_inds), tf.zeros(gt_inds.shape), tf.constant(labels))


def three_images():
    g = np.full((3, 100), -1, np.int32)
    g[0, :10], g[0, 10:90] = 1, 0  # 10 pos, 80 neg, 10 ignored
    g[1, 50:52], g[1, 52:] = 2, 0  # 2 pos, 48 neg
    g[2, 95:] = 0  # 0 pos, 5 neg
    return g


def check_sample_sets(res, gt_inds):
    idx, valid, pos = res.indices.numpy(), res.valid.numpy(), res.is_pos.numpy()
    for b in range(gt_inds.shape[0]):
        p = idx[b][pos[b]]
        n = idx[b][valid[b] & ~pos[b]]
        assert (gt_inds[b][p] > 0).all() and (gt_inds[b][n] == 0).all()
        assert len(set(p)) == len(p) and len(set(n)) == len(n)
        assert (np.diff(p) > 0).all() and (np.diff(n) > 0).all()  # ascending, as mmdet
        k = len(p)
        assert pos[b][:k].all() and not pos[b][k:].any()  # positives first
        np.testing.assert_array_equal(res.gt_inds.numpy()[b][valid[b]],
                                      gt_inds[b][idx[b][valid[b]]])
        assert (res.gt_inds.numpy()[b][~valid[b]] == -1).all()


def test_counts_follow_mmdet_rule():
    g = three_images()
    sampler = RandomSampler(16, 0.25, add_gt_as_proposals=False, seed=1)
    res = sampler.sample(assignment(g))
    np.testing.assert_array_equal(res.num_pos.numpy(), [4, 2, 0])
    np.testing.assert_array_equal(res.num_neg.numpy(), [12, 14, 5])
    assert res.indices.shape == (3, 16)
    check_sample_sets(res, g)
    assert res.boxes is None


def test_neg_pos_upper_bound():
    g = three_images()
    res = RandomSampler(16, 0.25, neg_pos_ub=3, add_gt_as_proposals=False).sample(assignment(g))
    np.testing.assert_array_equal(res.num_pos.numpy(), [4, 2, 0])
    # int(3 * max(1, #pos)): 12, 6, 3
    np.testing.assert_array_equal(res.num_neg.numpy(), [12, 6, 3])
    check_sample_sets(res, g)


def test_uniform_over_candidates():
    g = np.full((1, 40), 0, np.int32)
    g[0, :10] = 1
    sampler = RandomSampler(8, 0.5, add_gt_as_proposals=False, seed=0)
    f = tf.function(lambda a: sampler.sample(a).indices)
    counts = np.zeros(40)
    draws = 300
    for _ in range(draws):
        counts[f(assignment(g)).numpy()[0]] += 1
    # each positive is drawn with p = 4/10, each negative with p = 4/30
    p_pos, p_neg = counts[:10] / draws, counts[10:] / draws
    assert abs(p_pos.mean() - 0.4) < 0.01 and abs(p_neg.mean() - 4 / 30) < 0.01
    # binomial sd: sqrt(.4*.6/300) = 0.028 and 0.0196; 5 sd bounds per box
    assert np.all(np.abs(p_pos - 0.4) < 0.15) and np.all(np.abs(p_neg - 4 / 30) < 0.1)


def test_seeding():
    g = three_images()
    a = assignment(g)
    s1, s2 = RandomSampler(16, 0.25, add_gt_as_proposals=False, seed=3), \
        RandomSampler(16, 0.25, add_gt_as_proposals=False, seed=3)
    first, again = s1.sample(a).indices.numpy(), s2.sample(a).indices.numpy()
    np.testing.assert_array_equal(first, again)  # same seed, same sequence
    assert not np.array_equal(first, s1.sample(a).indices.numpy())  # state advances
    stateless = s1.sample(a, seed=[7, 9]).indices.numpy()
    np.testing.assert_array_equal(stateless, s2.sample(a, seed=[7, 9]).indices.numpy())
    assert not np.array_equal(stateless, s1.sample(a, seed=[7, 10]).indices.numpy())


def test_add_gt_as_proposals():
    proposals = np.array([[[0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 40]]], np.float32)
    prop_assign = AssignResult(tf.constant([[0, 1, 0]]), tf.constant([[0.1, 0.6, 0.0]]),
                               tf.constant([[-1, 4, -1]]))
    gt = np.array([[[1, 1, 9, 9], [50, 50, 60, 60], [0, 0, 0, 0]]], np.float32)
    labels = np.array([[4, 2, -1]], np.int32)
    crowd = np.array([[False, True, False]])
    boxes, merged = add_gt_as_proposals(proposals, prop_assign, gt, labels, crowd)
    assert boxes.shape == (1, 6, 4)
    np.testing.assert_array_equal(merged.gt_inds.numpy(), [[1, -1, -1, 0, 1, 0]])
    np.testing.assert_array_equal(merged.labels.numpy(), [[4, -1, -1, -1, 4, -1]])
    np.testing.assert_allclose(merged.max_overlaps.numpy(), [[1, 0, 0, 0.1, 0.6, 0]])

    sampler = RandomSampler(4, 0.5, add_gt_as_proposals=True, seed=0)
    res = sampler.sample(prop_assign, proposals, gt, labels, crowd)
    np.testing.assert_array_equal(res.num_pos.numpy(), [2])
    np.testing.assert_array_equal(res.num_neg.numpy(), [2])
    np.testing.assert_array_equal(res.indices.numpy(), [[0, 4, 3, 5]])
    np.testing.assert_allclose(res.boxes.numpy()[0, 0], gt[0, 0])
    np.testing.assert_array_equal(res.labels.numpy(), [[4, 4, -1, -1]])
    pos, neg = res.dense_masks(6)
    np.testing.assert_array_equal(pos.numpy(), [[1, 0, 0, 0, 1, 0]])
    np.testing.assert_array_equal(neg.numpy(), [[0, 0, 0, 1, 0, 1]])
    with pytest.raises(KdetError, match="add_gt_as_proposals needs"):
        sampler.sample(prop_assign)


def test_xla_with_seed_generator():
    g = three_images()
    sampler = RandomSampler(16, 0.25, neg_pos_ub=3, add_gt_as_proposals=False, seed=2)
    f = tf.function(sampler.sample, jit_compile=True)
    res = f(assignment(g))
    np.testing.assert_array_equal(res.num_neg.numpy(), [12, 6, 3])
    check_sample_sets(res, g)


MIRRORED = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kdet.core import AssignResult, RandomSampler
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        sampler = RandomSampler(8, 0.25, add_gt_as_proposals=False, seed=1)
    g = np.zeros((1, 40), np.int32)
    g[0, :10] = 1
    a = AssignResult(tf.constant(g), tf.zeros([1, 40]), tf.constant(g))
    step = tf.function(lambda: strategy.run(lambda: sampler.sample(a).indices))
    for _ in range(2):
        r0, r1 = [t.numpy() for t in strategy.experimental_local_results(step())]
        print(int((r0 != r1).any()))
""")


@pytest.mark.slow  # a fresh TensorFlow process: ~10-20 s on the shared 2-core machine
def test_replicas_draw_distinct_samples_under_mirrored_strategy():
    # a fresh process: logical CPU devices must be set before TensorFlow starts
    out = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "1"]


def test_bad_arguments():
    with pytest.raises(KdetError, match="pos_fraction"):
        RandomSampler(16, 1.5)
    with pytest.raises(KdetError, match="num"):
        RandomSampler(0, 0.5)
    cfg = RandomSampler(512, 0.25, seed=4).get_config()
    assert RandomSampler.from_config(cfg).num_expected_pos == 128
