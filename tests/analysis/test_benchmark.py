"""``tools/analysis/benchmark.py`` and ``mmattn.analysis.benchmark``: a tiny
run writes the table and the chart, and every ratio is finite and positive
(no timing assertions: times depend on the machine)."""
import math

import pytest
import torch
from analysis_tools import load_tool

from mmattn.analysis.benchmark import (FWD, FWD_BWD, MODULES, TRAIN,
                                       CopyFloor, Measurement, Row,
                                       _forward_backward, module_shapes,
                                       peak_memory)

BENCHMARK = load_tool('benchmark')


def _ratios(row, mode):
    against = ('floor', 'peer') if row.level == 'module' else ('peer', )
    return [row.ratio(mode, quantity, ref) for quantity in ('time', 'memory')
            for ref in against]


def test_quick_module_run_writes_table_and_chart(tmp_path):
    rows = BENCHMARK.main([
        '--modules', 'SE', 'SimAM', 'NonLocal', '--quick', '--repeat', '1',
        '--shapes', '2x64x8x12', '--out-dir', str(tmp_path)])
    assert [(r.name, r.setting) for r in rows] == [
        ('SE', '2x64x8x12'), ('SimAM', '2x64x8x12'),
        ('NonLocal', '1x256x24x40')]
    for row in rows:
        for mode in (FWD, FWD_BWD):
            for ratio in _ratios(row, mode):
                assert math.isfinite(ratio) and ratio > 0, (row, mode)
    table = (tmp_path / 'benchmark.md').read_text()
    assert '| SE | 2x64x8x12 | timm SEModule |' in table
    assert 'mmcv NonLocal2d' in table
    assert (tmp_path / 'benchmark.png').read_bytes()[:4] == b'\x89PNG'


def test_backbone_level_runs_against_plain_resnet(tmp_path):
    rows = BENCHMARK.main([
        '--level', 'backbone', '--modules', 'floor', 'ECA', '--repeat', '1',
        '--image-size', '32', '32', '--out-dir', str(tmp_path)])
    assert [(r.level, r.name) for r in rows] == [('backbone', 'floor'),
                                                 ('backbone', 'ECA')]
    for row in rows:
        assert all(math.isfinite(v) and v > 0 for v in _ratios(row, TRAIN))
    table = (tmp_path / 'benchmark.md').read_text()
    assert 'ECA vs mmdet ResNet-50' in table
    assert 'floor vs mmdet ResNet-50' in table


def test_copy_floor_copies_both_ways():
    floor = CopyFloor(8)
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    out = floor(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    assert torch.equal(x.grad, grad) and x.grad.data_ptr() != grad.data_ptr()
    assert module_shapes(MODULES['floor'], [(2, 8, 3, 3)], False) == []


@pytest.mark.slow
def test_compiled_rows_beside_the_eager_ones(tmp_path):
    rows = BENCHMARK.main([
        '--modules', 'SimAM', '--compile', '--quick', '--repeat', '1',
        '--shapes', '2x64x8x12', '--out-dir', str(tmp_path)])
    assert [r.label for r in rows] == ['SimAM', 'SimAM compiled']
    compiled = rows[1]
    for mode in (FWD, FWD_BWD):
        for against in ('floor', 'peer'):
            ratio = compiled.ratio(mode, 'time', against)
            assert math.isfinite(ratio) and ratio > 0
            # the CPU profiler does not see compiled allocations
            assert math.isnan(compiled.ratio(mode, 'memory', against))
    assert '| SimAM compiled | 2x64x8x12 |' in (
        tmp_path / 'benchmark.md').read_text()


def test_every_peer_builds_and_keeps_the_shape():
    """Each module and its peer accept the module's (small) input."""
    for spec in MODULES.values():
        for b, c, _, _ in module_shapes(spec, [(2, 256, 4, 6)], quick=True):
            x = torch.randn(b, c, 6, 8)
            for build in (spec.build, spec.build_peer):
                assert build(c)(x).shape == x.shape, spec.name


def test_cpu_peak_memory_counts_what_is_alive_at_once():
    x = torch.randn(1000)  # 4000 bytes

    def two_copies():
        a = x.clone()
        b = x.clone()
        del a, b

    def one_copy_twice():
        x.clone()
        x.clone()

    assert peak_memory(two_copies, torch.device('cpu')) == 8000
    assert peak_memory(one_copy_twice, torch.device('cpu')) == 4000


def test_training_calls_measure_the_same_peak_every_time():
    """A training call frees the gradients it wrote before it returns, so
    that a profiled call's gradients do not count against the next one:
    the module's and then the peer's calls, run alike, read alike (the
    output and the input gradient, 400,000 bytes each)."""
    x = torch.randn(100_000, requires_grad=True)
    grad = torch.randn(100_000)
    module, peer = (_forward_backward(torch.nn.Sigmoid(), x, grad)
                    for _ in range(2))
    module()
    assert x.grad is None
    peaks = [peak_memory(call, torch.device('cpu'))
             for call in (module, peer, module, peer)]
    assert peaks == [800_000] * 4, peaks


def test_unknown_module_is_rejected(tmp_path):
    with pytest.raises(SystemExit, match='unknown modules'):
        BENCHMARK.main(['--modules', 'XYZ', '--out-dir', str(tmp_path)])


def test_time_ratio_pairs_the_calls_of_a_round():
    """A slow stretch in the rounds (the third here) divides out of the
    per-round ratios; a ratio of medians would read 2.2."""
    row = Row('backbone', 'SE', '2x3x64x64', 'plain',
              {TRAIN: Measurement((1.1, 2.2, 5.5), 200)},
              {TRAIN: Measurement((1.0, 2.0, 1.0), 100)})
    assert row.ratio(TRAIN, 'time', 'peer') == pytest.approx(1.1)
    assert row.ratio(TRAIN, 'memory', 'peer') == 2.0
    assert math.isnan(row.ratio(TRAIN, 'time', 'floor'))
