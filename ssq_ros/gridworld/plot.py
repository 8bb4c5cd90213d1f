"""PNG of a gridworld result: the learned value as a heat map, the cliff, the policy's arrows."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from ssq_ros.gridworld.env import GridWorld  # noqa: E402

# Arrow (dx, dy) per action in plot coordinates (row 0 drawn at the top).
_ARROWS = {0: (0.0, -0.35), 1: (0.35, 0.0), 2: (0.0, 0.35), 3: (-0.35, 0.0)}


def plot_gridworld(world: GridWorld, policy: np.ndarray, values: np.ndarray, title: str,
                   path: str | Path) -> Path:
    """Draw V(s), the cliff (red), start and goal, and the policy's most likely action."""
    path = Path(path)
    grid = values.reshape(world.rows, world.cols)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * world.cols), max(2.5, 0.8 * world.rows)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap='viridis')
    fig.colorbar(image, ax=ax, label='learned soft value V(s)')
    for state in range(world.n_states):
        row, col = world.cell(state)
        if world.unsafe[state]:
            ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, color='tab:red'))
            continue
        if state == world.goal:
            ax.text(col, row, 'G', ha='center', va='center', fontweight='bold')
            continue
        dx, dy = _ARROWS[int(np.argmax(policy[state]))]
        ax.arrow(col - dx / 2, row - dy / 2, dx, dy, head_width=0.15, color='white',
                 length_includes_head=True)
        if state == world.start:
            ax.text(col - 0.4, row + 0.4, 'S', color='white', fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
