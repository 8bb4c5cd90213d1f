"""Training on the arm: the ROS-free pieces `ssq-train` and the ROS nodes are built from.

Configuration (`ssq_ros.training.config`)
    TrainConfig, load_train_config(path), with_overrides(config, seed=, steps=)
        Sections: robot/safe_set files, action_kind (discrete | continuous), sim (physics,
        task, actions, behavior mu: weights, sigma, K), learner (LearnerConfig: critic,
        extraction, replay_capacity), schedule (steps, learning_starts, updates_per_step,
        extract_every, eval_every, eval_episodes, checkpoint_every, seed, ...). Validated on
        load; unknown keys and out-of-range values are errors naming the key.

Learner (`ssq_ros.training.learner`), what the `q_learner` node hosts
    TaskSpaces(obs_dim, action_kind, action_size, num_samples, ...): the spaces a learner and
        an exported policy are built for.
    OnlineLearner(spaces, LearnerConfig, seed)
        add_transition(obs, action, reward, next_obs, done, next_support)
            next_support: mu's probabilities at s' (discrete, (n,)) or K samples (K, d).
        train(n_updates) -> dict      critic steps; mean loss / Q statistics
        extract(n_steps) -> dict      policy steps; increments policy_version
        q_values(obs, actions) -> (N,)
        save(folder) / load(folder)   folder/learner.pt, atomic; holds critic, targets, policy,
                                      optimizers, replay, RNG states, counters, config.

Export (`ssq_ros.deploy.export`)
    export_policy(learner, train_config=None) -> bytes   TorchScript + spaces, version, config
    load_exported_policy(bytes | path) -> ExportedPolicy  needs no training state

Execution (`ssq_ros.deploy.executor`), used by the evaluation and the `policy_executor` node
    ShieldedExecutor(policy=None, greedy=True, seed=0), .set_policy(policy)
        act_discrete(obs, mu_probs_or_mask) -> ExecutorDecision(action, status)
        act_continuous(obs, samples (K, d), is_safe) -> ExecutorDecision(action, status)
    `status` is a `ssq_ros.safety.status.SafetyStatus`; action None means stop the arm.

The loop (`ssq_ros.training.trainer.Trainer(config, out).run()`), held-out evaluation
(`evaluate`), the env + mu glue (`problem`) and plots (`plots`) are used by ssq-train and
ssq-report.
"""
