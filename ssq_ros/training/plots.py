"""Plots and the summary table of a run folder, from what the trainer wrote incrementally.

Works on a finished run and on a killed one (log.jsonl is appended as training goes; the
calibration scatter needs the final evaluation and is skipped without it).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_log(folder: str | Path) -> list[dict]:
    """Records of log.jsonl; a last line cut by a kill is ignored."""
    path = Path(folder) / 'log.jsonl'
    if not path.exists():
        raise FileNotFoundError(f'{path}: no training log (is {folder} a run folder?)')
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number < len(lines):
                raise ValueError(f'{path}:{number}: corrupt record ({exc})') from exc
    return records


def _of(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r.get('type') == kind]


def write_plots(folder: str | Path) -> list[Path]:
    """PNG plots into folder/plots/; returns the files written."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    folder = Path(folder)
    records = read_log(folder)
    episodes, evals = _of(records, 'episode'), _of(records, 'eval')
    plots = folder / 'plots'
    plots.mkdir(exist_ok=True)
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(plots / name, dpi=100)
        plt.close(fig)
        written.append(plots / name)

    fig, ax = plt.subplots(figsize=(7, 4))
    if episodes:
        steps = [e['step'] for e in episodes]
        returns = [e['return'] for e in episodes]
        ax.plot(steps, returns, '.', alpha=0.3, label='behavior mu (training episodes)')
        ax.plot(steps, _running_mean(returns, 20), label='mu, mean of 20')
    if evals:
        ax.plot([e['step'] for e in evals], [e['return'] for e in evals], 'o-',
                label='shielded policy (held-out goals)')
    ax.set(xlabel='environment steps', ylabel='episode return', title='Learning curve')
    ax.legend()
    save(fig, 'learning_curve.png')

    fig, ax = plt.subplots(figsize=(7, 4))
    if episodes:
        ax.plot([e['step'] for e in episodes],
                _running_mean([float(e['success']) for e in episodes], 20),
                label='behavior mu (training, mean of 20)')
    if evals:
        ax.plot([e['step'] for e in evals], [e['success_rate'] for e in evals], 'o-',
                label='shielded policy (held-out goals)')
        final = [e for e in evals if e.get('behavior')]
        if final:
            ax.axhline(final[-1]['behavior']['success_rate'], color='gray', ls='--',
                       label='behavior mu (held-out goals)')
    ax.set(xlabel='environment steps', ylabel='success rate', ylim=(-0.05, 1.05),
           title='Success rate')
    ax.legend()
    save(fig, 'success_rate.png')

    fig, ax = plt.subplots(figsize=(7, 4))
    if episodes:
        ax.plot([e['step'] for e in episodes], [e['min_margin'] for e in episodes], '.',
                label='per training episode')
    ax.axhline(0.0, color='red', lw=1, label='unsafe below 0')
    ax.set(xlabel='environment steps', ylabel='minimum referee margin [m or rad]',
           title='Minimum safety margin during training')
    ax.legend()
    save(fig, 'safety_margin.png')

    calibration = folder / 'calibration.npz'
    if calibration.exists():
        with np.load(calibration) as data:
            pairs = {k: data[k] for k in data.files}
        fig, ax = plt.subplots(figsize=(5, 5))
        for who in ('behavior', 'policy'):
            q, g = pairs[f'q_{who}'], pairs[f'g_{who}']
            if q.size:
                ax.plot(g, q, '.', alpha=0.3, ms=3, label=f'{who} rollouts')
        values = np.concatenate([pairs[k] for k in pairs]) if pairs else np.zeros(1)
        if values.size:
            low, high = float(values.min()), float(values.max())
            ax.plot([low, high], [low, high], 'k--', lw=1, label='Q = G')
        ax.set(xlabel='observed discounted return G', ylabel='Q(s, a)',
               title='Value calibration (held-out goals)')
        ax.legend()
        save(fig, 'value_calibration.png')
    return written


def _running_mean(values: list[float], window: int) -> np.ndarray:
    """Mean of the last `window` values at every index (fewer at the start)."""
    cumulative = np.cumsum(np.insert(np.asarray(values, dtype=float), 0, 0.0))
    end = np.arange(1, len(values) + 1)
    start = np.maximum(end - window, 0)
    return (cumulative[end] - cumulative[start]) / (end - start)


def summary_rows(folder: str | Path) -> list[tuple[str, str]]:
    """(name, value) rows: metrics.json if the run finished, else what the log shows so far."""
    folder = Path(folder)
    records = read_log(folder)
    episodes, evals = _of(records, 'episode'), _of(records, 'eval')
    metrics_file = folder / 'metrics.json'
    rows = [('status', 'finished' if metrics_file.exists() else 'partial (no metrics.json)')]
    if metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
        return rows + [(k, _fmt(v)) for k, v in metrics.items()]
    trains = _of(records, 'train')
    rows += [('env_steps', _fmt(episodes[-1]['step'] if episodes else 0)),
             ('episodes_train', _fmt(len(episodes))),
             ('updates', _fmt(trains[-1]['updates'] if trains else 0)),
             ('unsafe_states_train', _fmt(episodes[-1]['unsafe_total'] if episodes else 0)),
             ('unsafe_states_eval', _fmt(sum(e['unsafe'] for e in evals))),
             ('min_margin_train', _fmt(min((e['min_margin'] for e in episodes),
                                           default=float('nan'))))]
    if episodes:
        rows.append(('success_rate_behavior_train',
                     _fmt(np.mean([e['success'] for e in episodes]))))
    if evals:
        rows += [('success_rate_policy (last eval)', _fmt(evals[-1]['success_rate'])),
                 ('return_policy (last eval)', _fmt(evals[-1]['return']))]
    extractions = _of(records, 'extract')
    if extractions:
        rows += [('policy_fit_kl (last extraction)', _fmt(extractions[-1]['fit_kl'])),
                 ('policy_fit_agreement (last extraction)',
                  _fmt(extractions[-1]['fit_agreement']))]
    return rows


def _fmt(value) -> str:
    if isinstance(value, float):
        return f'{value:.4g}'
    if isinstance(value, dict):
        return ', '.join(f'{k}={v}' for k, v in value.items()) or '-'
    return str(value)
