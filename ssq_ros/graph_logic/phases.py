"""The phases of a train_sim run, announced by the learner on /ssq/run_phase.

    train          mu (safe_behavior) acts; transitions train the learner
    extract        the budget is spent: nobody acts while the final policy is extracted
    eval_policy    the policy executor acts on the held-out episodes (behind the shield)
    eval_behavior  mu acts on the same held-out episodes (value calibration, baseline)
    done           metrics.json written; the graph shuts down

The text form is `<phase>` or `<phase> policy_version=<n>`; the executor acts in eval_policy
only once it holds that policy version, so it never evaluates an older one.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class RunPhase(enum.Enum):
    TRAIN = 'train'
    EXTRACT = 'extract'
    EVAL_POLICY = 'eval_policy'
    EVAL_BEHAVIOR = 'eval_behavior'
    DONE = 'done'


@dataclass(frozen=True)
class PhaseAnnouncement:
    phase: RunPhase
    policy_version: int = 0

    def encode(self) -> str:
        if self.policy_version:
            return f'{self.phase.value} policy_version={self.policy_version}'
        return self.phase.value


def decode_phase(text: str) -> PhaseAnnouncement:
    """Parse `encode`'s text; a ValueError names what is wrong."""
    words = text.split()
    if not words:
        raise ValueError('empty run phase')
    try:
        phase = RunPhase(words[0])
    except ValueError:
        raise ValueError(f'unknown run phase {words[0]!r} (known: '
                         f'{", ".join(p.value for p in RunPhase)})') from None
    version = 0
    for word in words[1:]:
        key, sep, value = word.partition('=')
        if key != 'policy_version' or not sep or not value.isdigit():
            raise ValueError(f'run phase {text!r}: unexpected {word!r}')
        version = int(value)
    return PhaseAnnouncement(phase, version)
