"""What is trained: one model (`SingleModel`) or a population (`Population`), the two implementations of the
interface that the training loop (mmjax/train.py: train_and_evaluate) drives. Each creates or restores its
state and puts it on the devices, runs a dispatch of steps, evaluates, saves, and says what to sample and
what to print at the end. Losses and scores have a member axis, of length 1 for one model."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax import losses, optimizers, pbt, population, sampling, state, steps
from mmjax.errors import UserError
from mmjax.models import create_model


def gradient(config):
    """The train step's value_and_grad: lecture 4's manual backward pass with config.manual_grad."""
    if config.manual_grad:
        from mmjax import backprop  # a lecture tool: imported only by the runs that use it

        return backprop.value_and_grad
    return losses.value_and_grad


def last_step(config):
    """config.max_steps; -1 (makemore's default) trains until stopped."""
    return float("inf") if config.max_steps == -1 else config.max_steps


def data_parallel(batch_size):
    """Shardings over every device of every process: (replicated, batch split on the 'data' axis)."""
    devices = jax.device_count()
    if batch_size % devices:
        raise UserError(f"batch size {batch_size} does not divide over {devices} devices: "
                        f"pass a multiple of {devices}")
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


class SingleModel:
    """One model, its batch split over every device (data parallelism)."""

    members = None  # a population's member configs

    @staticmethod
    def check(config):
        """Refusals before a work dir is written."""
        data_parallel(config.batch_size)

    def __init__(self, config, workdir, dataset, resumed):
        vocab = dataset.vocab
        self.config, self.workdir, self.vocab = config, workdir, vocab
        self.model = create_model(config, vocab.size, vocab.block_size)
        self.fit = getattr(self.model, "fit", None)  # a model fitted in closed form: one step, no gradients
        restored = workdir.checkpoints.restore(state.abstract_train_state(config, vocab)) if resumed else None
        if restored is None:
            train_state = state.create_train_state(config, vocab, jax.random.PRNGKey(config.seed))
        else:  # with the config's hyper-parameters: a resumed run may change them
            train_state = restored.replace(opt_state=optimizers.with_hyperparams(restored.opt_state, config))
        self.replicated, self.batch_sharding = data_parallel(config.batch_size)
        self.state, self.train_words = self.place((train_state, vocab.encode_words(dataset.train_words)))
        self.step, self.max_steps = int(self.state.step), 1 if self.fit else last_step(config)
        self.dropout, self.value_and_grad = state.dropout_rate(config), gradient(config)

    def place(self, tree):
        """Replicated on every device. Through host memory: with several processes, device_put onto a global
        sharding takes host values (the same on every process, which it checks), not arrays on a local device."""
        return jax.device_put(jax.device_get(tree), self.replicated)

    def train(self, num_steps):
        """The losses of `num_steps` steps: (num_steps, 1)."""
        if self.fit:
            self.state = self.state.replace(step=1, params=self.fit(*self.train_words))
            self.step = 1
            return np.array([[steps.evaluate(self.state, *self.train_words, self.config.eval_batch_size)]])
        self.state, losses_s = steps.run_steps(lambda state, n: steps.train_steps(
            state, *self.train_words, self.dropout, num_steps=n, batch_size=self.config.batch_size,
            value_and_grad=self.value_and_grad, compute_dtype=self.config.compute_dtype,
            batch_sharding=self.batch_sharding), self.state, num_steps)
        self.step += num_steps
        return losses_s[:, None]

    def evaluate(self, eval_sets):
        """Each set's loss, (1,) each; and the ensemble's ({}: none)."""
        evaluated = optimizers.evaluated(self.state)
        return {name: np.array([steps.evaluate(evaluated, *xy, self.config.eval_batch_size, self.config.compute_dtype)])
                for name, xy in eval_sets.items()}, {}

    def hook_metrics(self, hooks, x_bt, y_bt):
        """Per member, what the hooks make of its training state on a batch."""
        hooks = () if self.fit else hooks
        return [{k: v for hook in hooks for k, v in hook(self.state, x_bt, y_bt).items()}]

    def member_fields(self, i, hyperparams=True):
        """What names member i in a metrics line: {} for one model."""
        return {}

    def adapt(self, losses_k):
        return [], []

    def save(self, score_k):
        self.workdir.checkpoints.save(self.step, latest=self.state, best=optimizers.evaluated(self.state),
                                      score=float(score_k[0]))

    def sample_source(self):
        """The model, state and config (its seed and sampling options) that samples come from."""
        return self.model, optimizers.evaluated(self.state), self.config

    def summary(self, score_name):
        return None


class Population:
    """Members trained in one program (population.py), split over the local devices on the "pop" axis."""

    @staticmethod
    def check(config):
        population.member_configs(config)  # the sweep's fields and values
        if getattr(create_model(config, 1, 1), "fit", None):
            raise UserError(f"{config.type} is fitted in closed form, so its members would all be the same: "
                            "train it without --population and --sweep")

    def __init__(self, config, workdir, dataset, resumed):
        vocab = dataset.vocab
        self.config, self.workdir, self.members = config, workdir, population.member_configs(config)
        self.model = create_model(config, vocab.size, vocab.block_size)
        restored = workdir.checkpoints.restore(population.abstract_checkpoint(config, vocab)) if resumed else None
        rates = [c.dropout for c in self.members]
        if restored is None:
            states = population.create_states(config, vocab, self.members)
            best = population.initial_best(states)
        elif config.pbt:  # the hyper-parameters where the exploits took them
            states, best, rates = restored["state"], restored["best"], restored["dropout"].tolist()
            self.members = population.with_hyperparams(self.members, states.opt_state, rates)
        else:  # with each member's hyper-parameters: a resumed run may change them
            states, best = restored["state"], restored["best"]
            states = states.replace(opt_state=population.with_member_hyperparams(states.opt_state, self.members))
        self.mesh = population.mesh(len(self.members))
        self.spmd_axis = None if self.mesh is None else "pop"
        if jax.process_index() == 0:
            devices = 1 if self.mesh is None else self.mesh.size
            print(f"population: {len(self.members)} members on {devices} {jax.devices()[0].platform} "
                  f"device{'s' * (devices > 1)}, {len(self.members) // devices} on each")
        dropout_k = jnp.asarray(rates, jnp.float32) if any(rates) else None  # None: no dropout compiled
        self.state, self.best, self.dropout_k = self.spread((states, best, dropout_k))
        self.train_words = self.place(vocab.encode_words(dataset.train_words))
        self.step, self.max_steps = int(states.step[0]), last_step(config)
        self.value_and_grad = gradient(config)

    def spread(self, tree):
        """Split on the "pop" axis over the members' devices (no gradient crosses them); from host values, the
        same on every process, when the devices are several hosts'."""
        return jax.device_put(jax.device_get(tree), None if self.mesh is None else NamedSharding(self.mesh, P("pop")))

    def place(self, tree):
        """Replicated on the members' devices."""
        return jax.device_put(jax.device_get(tree), None if self.mesh is None else NamedSharding(self.mesh, P()))

    def train(self, num_steps):
        """The losses of `num_steps` steps: (num_steps, members)."""
        self.state, losses_sk = steps.run_steps(lambda states, n: steps.population_train_steps(
            states, *self.train_words, self.dropout_k, num_steps=n, batch_size=self.config.batch_size,
            value_and_grad=self.value_and_grad, compute_dtype=self.config.compute_dtype, spmd_axis=self.spmd_axis),
            self.state, num_steps)
        self.step += num_steps
        return losses_sk

    def evaluate(self, eval_sets):
        """Each set's loss per member, (members,) each; and the ensemble's, {"ensemble_NAME": loss}."""
        evaluated = optimizers.evaluated(self.state)
        step = lambda *args: steps.population_eval_step(*args, spmd_axis=self.spmd_axis)
        metrics = {name: steps.evaluate(evaluated, *xy, self.config.eval_batch_size, self.config.compute_dtype, step)
                   for name, xy in eval_sets.items()}  # each: the members', then the ensemble's
        return ({name: v[:-1] for name, v in metrics.items()},
                {f"ensemble_{name}": float(v[-1]) for name, v in metrics.items()})

    def hook_metrics(self, hooks, x_bt, y_bt):
        if not hooks:
            return [{} for _ in self.members]
        members = [population.unstack(self.state, i) for i in range(len(self.members))]
        return [{k: v for hook in hooks for k, v in hook(member, x_bt, y_bt).items()} for member in members]

    def member_fields(self, i, hyperparams=True):
        return {"member": i, **(population.hyperparams(self.members[i]) if hyperparams else {})}

    def adapt(self, losses_k):
        """Population-based training's exploits at this evaluation, if it is due (pbt.due): the members
        replaced, and a metrics line for each."""
        if not pbt.due(self.config, self.step, self.max_steps):
            return [], []
        exploits = pbt.plan(self.config, self.step, losses_k["val_loss"])
        rates_k = np.asarray([c.dropout for c in self.members], np.float32)
        states, rates_k, changes = pbt.exploit(steps.fetch(self.state), rates_k, exploits)
        self.members = population.with_hyperparams(self.members, states.opt_state, rates_k.tolist())
        self.state = self.spread(states)
        if self.dropout_k is not None:
            self.dropout_k = self.spread(jnp.asarray(rates_k))
        lines = [{"step": self.step, "pbt": {"member": member, "parent": parent, "step": self.step,
                                             "before": changes[member][0], "after": changes[member][1]}}
                 for member, parent, _ in exploits]
        return [member for member, _, _ in exploits], lines

    def save(self, score_k):
        self.best = population.update_best(self.best, optimizers.evaluated(self.state), jnp.asarray(score_k, jnp.float32))
        latest = {"state": self.state, "best": self.best}
        if self.config.pbt:  # the rates the exploits set (the optimiser's scalars are in its state)
            latest["dropout"] = jnp.asarray([c.dropout for c in self.members], jnp.float32)
        self.workdir.checkpoints.save(self.step, latest=latest)

    def sample_source(self):
        """The best member so far (lowest best score; before any evaluation, member 0), as its standalone run."""
        member = int(np.argmin(steps.fetch(self.best["score"])))
        state = population.unstack(optimizers.evaluated(self.state), member)
        return self.model, state, self.members[member]

    def describe(self, i):
        return population.describe(self.config, self.members[i])

    def summary(self, score_name):
        return population.summary(self.config, self.members, self.workdir.metrics(), score_name)

