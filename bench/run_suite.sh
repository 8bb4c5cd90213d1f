#!/usr/bin/env bash
# The task-suite protocol (issues 14, 15): SSQ and its peers on wall, ushape, window and
# costly, 5 seeds each at 2 500, 5 000 and 10 000 env steps, judged once on the test split
# (held-out episodes 131-230), then docs/benchmarks.md. Resumable: a run or record made by the
# same commit with the same settings is reused, anything else runs again. Two processes at a
# time (2 cores).
#   bench/run_suite.sh            (or: make bench-full, after the peer table)
# About 22 h on a 2-core CPU from nothing (SAC-Lagrangian and TQC+HER at 10 000 steps: about
# 1.7 h of it; IQL on mu's data about 30 min (20 runs of 2-6 min); the costly task at 150 000
# steps: about 1.5 h for SSQ and 5 min for its averaging, 1.7 h for SAC behind the shield, 1 h
# for the DQN inside mu's support, about 2 h each for SAC-Lagrangian and SAC+HER behind the
# shield (50-56 min per seed, measured three processes on 2 cores) and 2.5 h for TQC+HER (66
# min per seed at that pace, measured in its first 20 min)).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
SEEDS="0 1 2 3 4"
TEST="--first 130 --episodes 100"
# both "TASKS A" "TASKS B" command...: the command on each half of the tasks, side by side
both() {
    local a=$1 b=$2
    shift 2
    "$@" --tasks $a &
    local first=$!
    "$@" --tasks $b
    wait "$first"
}
ALL=("wall ushape" "window costly")
for steps in 10000 5000 2500; do  # SSQ: the task configs as shipped (variant 'task')
    both "${ALL[@]}" "$PYTHON" -m bench.bench_tasks_train --variants task --seeds $SEEDS \
        --steps $steps --results "runs/suite/collect-$steps.json"
done
# SSQ in the continuous version of the tasks (the SAC peer's action set), 10 000 steps
both "wall ushape" "window" "$PYTHON" -m bench.bench_tasks_train --variants task_cont \
    --seeds $SEEDS --steps 10000 --results runs/suite/collect-cont.json
"$PYTHON" -m bench.bench_tasks_train --collect-only --results bench/results/tasks_induced.json
"$PYTHON" -m bench.bench_tasks_test --variants task --steps 10000 $TEST \
    --out bench/results/tasks_test_induced.json
for steps in 5000 2500; do  # the learning curve: the deployed executor only
    "$PYTHON" -m bench.bench_tasks_test --variants task --steps $steps $TEST \
        --executors policy --baselines-from bench/results/tasks_test_induced.json \
        --out "bench/results/tasks_test_$steps.json"
done
# SSQ continuous on the test split, half the tasks per process, joined
CONT="--variants task_cont --steps 10000 $TEST --executors policy induced \
    --baselines-from bench/results/tasks_test_induced.json"
"$PYTHON" -m bench.bench_tasks_test $CONT --tasks wall ushape --out runs/suite/test-cont-a.json &
first=$!
"$PYTHON" -m bench.bench_tasks_test $CONT --tasks window --out runs/suite/test-cont-b.json
wait "$first"
"$PYTHON" -m bench.bench_tasks_test --combine runs/suite/test-cont-a.json \
    runs/suite/test-cont-b.json --out bench/results/tasks_test_continuous.json
# Peers: the DQN, SAC, SAC-Lagrangian and TQC+HER grids on the validation episodes, their best
# points on the test split (DQN at every budget), BC and CQL on each SSQ run's data, IQL on mu's
# own steps in the continuous tasks, mu in the continuous tasks.
for method in dqn sac sac_lagrangian tqc_her; do  # costly: untuned, as SSQ
    both "wall ushape" "window" "$PYTHON" -m bench.bench_tasks_peers tune --method $method
done
for steps in 10000 5000 2500; do
    both "${ALL[@]}" "$PYTHON" -m bench.bench_tasks_peers test --point best --fresh \
        --steps $steps
done
for method in sac sac_lagrangian tqc_her; do
    both "${ALL[@]}" "$PYTHON" -m bench.bench_tasks_peers test --method $method --point best \
        --fresh
done
both "${ALL[@]}" "$PYTHON" -m bench.bench_tasks_peers offline
"$PYTHON" -m bench.bench_tasks_peers baselines
# The later SSQ rows (docs/results.md): goal-seeking mu with the induced policy collecting half
# (10 000 steps); goal-free mu, the induced policy collecting (10 000 and 30 000 steps); the
# costly task with directed exploration and mu keeping its heading (config/tasks/costly.yaml,
# 150 000 steps; about 30 min per run). SAC behind the shield and the DQN inside mu's support
# at goal-free SSQ's 30 000 steps, and on costly at its 150 000.
TUNED=("wall ushape" "window")
both "${TUNED[@]}" "$PYTHON" -m bench.bench_tasks_train --variants task_ic05 --seeds $SEEDS \
    --steps 10000 --results runs/suite/collect-ic05.json
for steps in 10000 30000; do
    both "${TUNED[@]}" "$PYTHON" -m bench.bench_tasks_train --variants task_gp0_ic1_a01 \
        --seeds $SEEDS --steps $steps --results "runs/suite/collect-goal-free-$steps.json"
done
# the wall, U and window yamls' learner now: the same runs, policy.pt the mean of the exports
# at 20 000-30 000 (every evaluation during training repeats task_gp0_ic1_a01's)
both "${TUNED[@]}" "$PYTHON" -m bench.bench_tasks_train --variants task_gp0_ic1_a01_avg \
    --seeds $SEEDS --steps 30000 --results runs/suite/collect-goal-free-avg.json
# costly.yaml's settings with every export kept instead of averaged in ssq-train: ssq-select
# --average then makes the same mean of the exports from step 100 000 on (test_bench_tasks_train
# asserts the two differ in nothing else)
EXPLORE=task_gp0_ic1_a01_her4_nb1_u05_oc_p4_keep
"$PYTHON" -m bench.bench_tasks_train --variants $EXPLORE --tasks costly --seeds 0 1 2 \
    --steps 150000 --results runs/suite/collect-costly-a.json &
first=$!
"$PYTHON" -m bench.bench_tasks_train --variants $EXPLORE --tasks costly --seeds 3 4 \
    --steps 150000 --results runs/suite/collect-costly-b.json
wait "$first"
# costly.yaml's deployed policy: the geometric mean of each run's exports from step 100 000 on
for seed in $SEEDS; do
    "$(dirname "$PYTHON")/ssq-select" "runs/suite/costly-$EXPLORE-150000-s$seed" --average
done
"$PYTHON" -m bench.bench_tasks_train --collect-only --results bench/results/tasks_induced.json
LATER="$TEST --executors policy --baselines-from bench/results/tasks_test_induced.json"
"$PYTHON" -m bench.bench_tasks_test --variants task_ic05 --steps 10000 $LATER \
    --out bench/results/tasks_test_ic05.json
"$PYTHON" -m bench.bench_tasks_test --variants task_gp0_ic1_a01 --steps 30000 $LATER \
    --out bench/results/tasks_test_goal_free_a01.json
"$PYTHON" -m bench.bench_tasks_test --variants task_gp0_ic1_a01 --steps 10000 $LATER \
    --out bench/results/tasks_test_goal_free_a01_10000.json
# the mean on the test split, then beside the last export on episodes 331-430 (never used by
# a wall, U or window run before)
AVG="--variants task_gp0_ic1_a01_avg --steps 30000 --episodes 100 --executors policy_sampled \
    policy"
"$PYTHON" -m bench.bench_tasks_test $AVG --first 130 \
    --baselines-from bench/results/tasks_test_goal_free_a01.json \
    --out bench/results/tasks_test_goal_free_a01_avg.json
"$PYTHON" -m bench.bench_tasks_test $AVG --first 330 \
    --out bench/results/tasks_test_goal_free_a01_avg_ep330.json
"$PYTHON" -m bench.bench_tasks_test $AVG --first 330 --policy policies/policy-0030000.pt \
    --baselines-from bench/results/tasks_test_goal_free_a01_avg_ep330.json \
    --out bench/results/tasks_test_goal_free_a01_last_ep330.json
"$PYTHON" -m bench.bench_tasks_test --variants $EXPLORE --tasks costly --steps 150000 $TEST \
    --executors policy_sampled policy --policy policy_averaged.pt \
    --baselines-from bench/results/tasks_test_induced.json \
    --out bench/results/tasks_test_costly_oc_p4_keep_averaged.json
# costly_150k METHOD POINT: the peer on the costly task at 150 000 steps, seeds 0-2 and 3-4
# side by side
costly_150k() {
    local run=("$PYTHON" -m bench.bench_tasks_peers test --method "$1" --point "$2" --fresh \
        --tasks costly --steps 150000)
    "${run[@]}" --seeds 0 1 2 &
    local first=$!
    "${run[@]}" --seeds 3 4
    wait "$first"
}
for method in sac dqn; do
    both "wall ushape" "window" "$PYTHON" -m bench.bench_tasks_peers test --method $method \
        --point best --fresh --steps 30000
    costly_150k $method best
done
# the peers trained without the shield, and SAC behind it with HER (the hindsight goals SSQ's
# costly runs have; its point named, not tuned: bench_tasks_peers' SAC_HER_GRID)
costly_150k sac_lagrangian best
costly_150k tqc_her best
costly_150k sac_her uniform_e400
"$PYTHON" -m bench.bench_tasks_peers table --ssq bench/results/tasks_test_induced.json \
    bench/results/tasks_test_5000.json bench/results/tasks_test_2500.json \
    bench/results/tasks_test_continuous.json bench/results/tasks_test_ic05.json \
    bench/results/tasks_test_goal_free_a01.json bench/results/tasks_test_goal_free_a01_10000.json \
    bench/results/tasks_test_goal_free_a01_avg.json \
    bench/results/tasks_test_costly_oc_p4_keep_averaged.json \
    --ssq-train bench/results/tasks_induced.json --fresh
# The DQN peer's harness on CartPole; equal work per env step (alone: it measures time)
"$PYTHON" -m bench.bench_harness_check --algo dqn --seeds 0 1 2 --no-progress
"$PYTHON" -m bench.bench_iteration
"$PYTHON" -m bench.make_benchmarks_doc
