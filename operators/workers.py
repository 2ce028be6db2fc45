"""The ``recover_faseg`` operator: fail the runs of dead workers and queue them again.

Thin over :func:`fiftyone_faseg.workers.recover_stale_runs`.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_faseg.workers import DEFAULT_MAX_AGE_S


class RecoverFASeg(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="recover_faseg",
            label="FA-Seg: recover runs of dead workers",
            description="Marks RUNNING FA-Seg runs without a recent heartbeat as failed and queues them again",
            dynamic=False,
            allow_immediate_execution=True,
            allow_delegated_execution=False,
        )

    def __call__(self, max_age_s=DEFAULT_MAX_AGE_S, requeue=True, all_datasets=False, dry_run=False, dataset=None):
        """Runs the recovery through this operator, as the App does.

        Example usage::

            import fiftyone.operators as foo

            recover = foo.get_operator("@faseg/fiftyone-faseg/recover_faseg")
            recover(max_age_s=900, all_datasets=True).result["requeued"]

        Args:
            max_age_s (DEFAULT_MAX_AGE_S): seconds without a heartbeat after which a
                run is presumed dead
            requeue (True): queue the failed runs again (with ``skip_existing=True``)
            all_datasets (False): recover runs of every dataset, not only ``dataset``
            dry_run (False): only list the stale runs
            dataset (None): the dataset whose runs to recover

        Returns:
            an :class:`fiftyone.operators.executor.ExecutionResult`
        """
        params = dict(max_age_s=max_age_s, requeue=requeue, all_datasets=all_datasets, dry_run=dry_run)
        ctx = dict(dataset=dataset) if dataset is not None else {}
        return foo.execute_operator(self.uri, ctx, params=params)

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.float("max_age_s", default=DEFAULT_MAX_AGE_S, label="Heartbeat older than (seconds)",
                     description="A run with no progress for this long is presumed dead: more than the "
                                 "longest model load plus batch of a live worker")
        inputs.bool("requeue", default=True, label="Queue them again",
                    description="The new runs skip the samples already written")
        inputs.bool("all_datasets", default=False, label="Runs of every dataset")
        inputs.bool("dry_run", default=False, label="Only list them")
        return types.Property(inputs, view=types.View(label="FA-Seg: recover runs of dead workers"))

    def execute(self, ctx):
        from fiftyone_faseg.workers import recover_stale_runs

        dataset_name = None
        if not ctx.params.get("all_datasets"):
            if ctx.dataset is None:
                raise ValueError("no dataset is open: open one or set all_datasets=True")
            dataset_name = ctx.dataset.name
        runs = recover_stale_runs(
            max_age_s=float(ctx.params.get("max_age_s", DEFAULT_MAX_AGE_S)),
            requeue=bool(ctx.params.get("requeue", True)),
            operator=None,  # every FA-Seg operator (run, rerun, evaluate, re-threshold, ...)
            dataset_name=dataset_name,
            dry_run=bool(ctx.params.get("dry_run", False)),
        )
        return dict(
            stale=[r.id for r in runs],
            failed=[r.id for r in runs if r.failed],
            requeued=[r.requeued_id for r in runs if r.requeued_id],
        )

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.list("stale", types.String(), label="Runs without a recent heartbeat")
        outputs.list("failed", types.String(), label="Marked failed")
        outputs.list("requeued", types.String(), label="Queued again")
        return types.Property(outputs, view=types.View(label="FA-Seg recovery"))


def register(p):
    p.register(RecoverFASeg)
