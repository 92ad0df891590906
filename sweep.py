"""Many runs at once: a stored results folder again, or a grid of one script's settings, here or
on a Slurm cluster (through submitit), and what comes out checked against the stored figures.

    python sweep.py results/toy25 --out runs/toy25     (... --set epochs=1000, --slurm --time 60, --dry-run)
    python sweep.py --command "python daae.py --dataset toy25" --seeds 0 1 2 --set sigma=0,0.5 --out runs/g

A job is a model script's command line (a stored run's, rebuilt from its config.json, or the
grid's) run in its run folder, then the eval.py studies it needs; output in <run>/sweep.log.
Safe to run again: a job whose run has its epochs and whose studies are in eval.json is skipped,
a run that was cut resumes exactly with --resume, a folder another process holds is left alone.
On Slurm the time-limit warning (SIGUSR2) makes the run save and stop, as SIGTERM does, and
submitit requeues the task. docs/sweep.md says what the check's "the same" means.
"""

import argparse
import importlib.util
import itertools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import compare
import machinery
from results import (CLASSIFICATION, LIKELIHOOD, MODES, QUALITY, RECONSTRUCTION, read_eval_json, read_evaluated,
                     stored)

HERE = Path(__file__).resolve().parent
SCRIPTS = ("aae", "daae", "idaae", "semi_supervised_aae", "learned_prior_aae", "ali", "text_to_image", "vae")
STUDIES = {"points": (MODES,), "images": (RECONSTRUCTION, CLASSIFICATION, LIKELIHOOD, QUALITY)}  # eval.py's
OTHER_STUDIES = {"prior": "eval.py", "agreement": "captions.py"}  # beside `eval.py all`'s, and their script


# Jobs: a script's settings and studies, and what is left to do in its run folder


@dataclass
class Job:
    name: str  # its run folder's name in the sweep's folder
    out: Path
    script: str
    settings: dict  # setting -> value, as the script's flags read them
    studies: dict  # eval.py study -> its flags ("all": every study of the run's data)
    tensorboard: bool = False

    def command(self, resume):
        return ["python", f"{self.script}.py", *machinery.settings_to_flags(self.script, self.settings),
                *(["--tensorboard"] if self.tensorboard else []), "--out", str(self.out),
                *(["--resume"] if resume else [])]

    def eval_commands(self, studies):
        return [["python", OTHER_STUDIES.get(study, "eval.py"), study, str(self.out), *self.studies[study]]
                for study in studies]

    def read(self, name):
        return json.loads((self.out / name).read_text()) if (self.out / name).exists() else {}

    def trained_epochs(self):
        """The epochs in log.csv (the last epoch is always saved); 0 for none."""
        log = self.out / "log.csv"
        return max((int(row.split(",")[0]) for row in log.read_text().splitlines()[1:] if row), default=0) \
            if log.exists() else 0

    def epochs(self):  # --set's or the command's, else what the script chose
        return self.settings.get("epochs") or self.read("config.json").get("epochs")

    def studies_left(self):
        """The studies whose results eval.json lacks for the run's last epoch."""
        results, config = self.read("eval.json"), self.read("config.json")
        kind = "points" if len(config.get("image_shape", [0, 0])) == 1 else "images"
        return [study for study in self.studies if any(
            results.get(s, {}).get("epoch") != self.epochs() or "unfinished" in results.get(s, {})
            for s in (STUDIES[kind] if study == "all" else (study,)))]

    def todo(self):
        """The commands still to run, decided from the run folder as it is now."""
        resume = (self.out / "checkpoint.pt").exists()
        if not resume or self.trained_epochs() != self.epochs():
            return [self.command(resume), *self.eval_commands(self.studies)]
        return self.eval_commands(self.studies_left())


def parse_sets(sets):
    """--set KEY=V1[,V2...] ... -> [(key, [texts])]."""
    for text in sets or []:
        if not re.fullmatch(r"[\w-]+=.+", text):
            raise machinery.CLIError(f"--set {text}: write KEY=VALUE (e.g. --set epochs=1000), or KEY=V1,V2 for a grid")
    return [(key.replace("-", "_"), values.split(",")) for key, values in (text.split("=", 1) for text in sets or [])]


def study_flags(key, result):
    """The eval.py flags a stored study was run with, from what its eval.json entry records."""
    flags = ["--seed", str(result["seed"])] if result.get("seed") else []
    if key in (LIKELIHOOD, QUALITY, MODES) and result.get("samples"):
        flags += ["--samples", str(result["samples"])]
    if isinstance(result.get("steps"), (list, dict)) and result["steps"]:
        flags += ["--steps", *map(str, result["steps"])]
    if key == LIKELIHOOD and result.get("bandwidth_chosen_on"):
        flags += ["--bandwidth-on", result["bandwidth_chosen_on"]]
    if key == QUALITY and result.get("feature_network"):
        flags += ["--feature-network", "inception" if "Inception" in result["feature_network"] else "classifier"]
    if key == CLASSIFICATION and any("--max-train" in note for note in result.get("notes", [])):
        flags += ["--max-train", str(result["train_images"])]
    return flags


def jobs_from_results(folder, out, sets):
    """One job per run stored in FOLDER (or in its folders: results/ holds the README's table), or
    only those its table.json names: its script and settings from config.json, --set's over them,
    and its studies, with their flags, from eval.json."""
    runs = sorted(path.parent for path in Path(folder).rglob("config.json"))
    if (Path(folder) / "table.json").exists():
        named = {name for spec in json.loads((Path(folder) / "table.json").read_text())
                 for name in spec.get("runs", []) + spec.get("against", [])}
        runs = [run for run in runs if run.relative_to(folder).as_posix() in named]
    if not runs:
        raise machinery.CLIError(f"{folder} holds no run folders (*/config.json): give a results folder, e.g. "
                                 "results/toy25")
    jobs = []
    for run in runs:
        config = machinery.read_config(run)
        script = config["model"]
        settings = {key: config[key] for key in machinery.flag_actions(machinery.script_parser(script))
                    if key in config and key != "device"}
        if settings["dataset"].endswith(".npz") and not Path(settings["dataset"]).exists() \
                and Path(Path(settings["dataset"]).name).exists():  # stored with another machine's path
            settings["dataset"] = str(Path(Path(settings["dataset"]).name).resolve())
        for key, values in sets:
            if len(values) > 1:
                raise machinery.CLIError(f"--set {key}={','.join(values)}: a results folder takes one value per "
                                         "setting (a grid is for --command)")
            value = machinery.parse_setting(script, key, values[0])
            settings[key] = settings.get(key) if value is None else value
        studies = {study: study_flags(study, result) for study, result in read_eval_json(run).items()
                   if study in [*STUDIES["points"], *STUDIES["images"], *OTHER_STUDIES]}
        name = run.relative_to(folder).as_posix()
        jobs.append(Job(name, Path(out) / name, script, settings, studies))
    for key, _ in sets:
        if all(machinery.parse_setting(job.script, key, "1") is None for job in jobs):
            raise machinery.CLIError(f"--set {key}: no script of {folder} has --{key.replace('_', '-')}")
    return jobs


def jobs_from_command(command, seeds, sets, out, studies):
    """A grid: the command's settings, each combination of --set's values, one run per seed."""
    words = shlex.split(command)
    words = words[1:] if words and Path(words[0]).name.startswith("python") else words
    script = Path(words[0]).stem if words else ""
    if script not in SCRIPTS or "--out" in words or "--resume" in words:
        raise machinery.CLIError(f"--command {command!r}: give a model script's command line without --out and "
                                 f"--resume, e.g. \"python daae.py --dataset toy25\" ({', '.join(SCRIPTS)})")
    machinery.script_parser(script)  # imports the script
    given = {k: v for k, v in vars(sys.modules[script].parse_args(words[1:])).items() if v not in (None, False)}
    grid = []
    for key, texts in sets:
        if machinery.parse_setting(script, key, texts[0]) is None:
            raise machinery.CLIError(f"--set {key}: {script}.py has no --{key.replace('_', '-')} (see "
                                     f"python {script}.py --help)")
        grid.append((key, [(machinery.parse_setting(script, key, text), text) for text in texts]))
    jobs = []
    for *values, seed in itertools.product(*(values for _, values in grid), seeds or [given.get("seed", 0)]):
        name = "-".join([*(f"{key}{text}" for (key, texts), (_, text) in zip(grid, values) if len(texts) > 1),
                         f"s{seed}"])
        settings = {**given, **{key: value for (key, _), (value, _) in zip(grid, values)}, "seed": seed}
        jobs.append(Job(name, Path(out) / name, script, settings, {study: [] for study in studies}))
    return jobs


def start(command, log, threads):
    """One command of a job, its output added to the run folder's sweep.log; it dies with us."""
    with open(log, "a") as handle:
        print(f"$ {shlex.join(command)}", file=handle, flush=True)
        return subprocess.Popen([sys.executable, str(HERE / command[1]), *command[2:]], stdout=handle,
                                stderr=subprocess.STDOUT, preexec_fn=machinery.die_with_parent,
                                env={**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})


# Here: a pool of processes, each job's commands one after another


def status(job, command):
    return f"{job.name} eval {command[2]}" if command[1] == "eval.py" else \
        f"{job.name} epoch {min(job.trained_epochs() + 1, job.epochs() or 1)}/{job.epochs() or '?'}"


def run_local(jobs, workers, threads):
    """The jobs on `workers` processes, with their progress; {job name: None, or why it failed}."""
    waiting, running, outcome, shown_line, shown_at = list(jobs), {}, {}, "", 0.0
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                job = waiting.pop(0)
                job.out.mkdir(parents=True, exist_ok=True)
                commands = job.todo()
                running[job.name] = job, commands, start(commands[0], job.out / "sweep.log", threads)
                print(f"started {job.name}: {shlex.join(commands[0])}", flush=True)
            for name, (job, commands, process) in list(running.items()):
                if process.poll() is None:
                    continue
                if process.returncode == 0 and len(commands) > 1:
                    running[name] = job, commands[1:], start(commands[1], job.out / "sweep.log", threads)
                    continue
                del running[name]
                outcome[name] = None if process.returncode == 0 else \
                    f"exit {process.returncode}: {machinery.last_line(job.out / 'sweep.log')}"
                print(f"done {name}" if outcome[name] is None else f"failed {name}: {outcome[name]}", flush=True)
            line = (f"[{sum(v is None for v in outcome.values())} done, {len(running)} running: "
                    + ", ".join(status(job, commands[0]) for job, commands, _ in running.values())
                    + f"; {sum(v is not None for v in outcome.values())} failed, {len(waiting)} waiting]")
            if line != shown_line and time.time() - shown_at > 30:  # the running jobs' epochs
                print(line, flush=True)
                shown_line, shown_at = line, time.time()
            time.sleep(0.5)
    except KeyboardInterrupt:  # every run saves and stops; the same command resumes them
        for _, _, process in running.values():
            process.send_signal(signal.SIGTERM)
            process.wait()
        raise
    return outcome


# Slurm: one submitit job array; a task at its time limit saves, and is requeued to resume


class SlurmTask:
    """What one array task runs: its job's commands left, decided when it starts, so that a
    requeued task resumes. At the time-limit warning submitit calls checkpoint(): the training run
    is asked to save and stop (Slurm may have signalled it too: the same request), then the task
    is requeued with itself."""

    def __init__(self, job, threads, grace):
        self.job, self.threads, self.grace, self.process, self.cwd = job, threads, grace, None, os.getcwd()

    def __call__(self):
        os.chdir(self.cwd)  # relative run and data folders, as where the sweep was started
        for command in self.job.todo():
            self.process = start(command, self.job.out / "sweep.log", self.threads)
            while self.process.poll() is None:  # not wait(): checkpoint() may come in between
                time.sleep(0.5)
            if self.process.returncode != 0:
                raise RuntimeError(f"exit {self.process.returncode}: {machinery.last_line(self.job.out / 'sweep.log')}")
        return self.job.name

    def checkpoint(self):
        import submitit

        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            os.kill(process.pid, signal.SIGTERM)
            deadline = time.time() + self.grace
            while time.time() < deadline and os.waitpid(process.pid, os.WNOHANG) == (0, 0):
                time.sleep(0.2)
        return submitit.helpers.DelayedSubmission(self)


def run_slurm(jobs, args, threads):
    """The jobs as one submitit job array; waits for it, with the queue's states; {job name: None
    or why it failed}."""
    if importlib.util.find_spec("submitit") is None or shutil.which("sbatch") is None:
        raise machinery.CLIError("--slurm needs submitit (pip install submitit) and Slurm's sbatch (a cluster's login "
                                 "node); or drop --slurm to run here")
    import submitit

    logging.getLogger("submitit").setLevel(logging.ERROR)  # not a warning a minute on clusters without sacct
    executor = submitit.AutoExecutor(folder=Path(args.out) / "slurm" / "%j", cluster="slurm",
                                     slurm_max_num_timeout=args.max_requeues)
    executor.update_parameters(  # None: left out of the sbatch script
        name=f"sweep-{Path(args.out).name}", timeout_min=args.time, cpus_per_task=args.cpus_per_job,
        slurm_partition=args.partition, gpus_per_node=args.gpus_per_job or None, slurm_mem=args.mem,
        slurm_signal_delay_s=args.signal_delay, slurm_array_parallelism=args.workers or len(jobs),
        slurm_additional_parameters=dict(text.split("=", 1) for text in args.sbatch or []))
    for job in jobs:
        job.out.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
    tasks = executor.submit_array([SlurmTask(job, threads, max(5, args.signal_delay - 15)) for job in jobs])
    array = tasks[0].job_id.split("_")[0]
    print(f"submitted job array {array} ({len(tasks)} tasks), logs in {Path(args.out) / 'slurm'}", flush=True)
    outcome, shown_line, lost = {}, "", {}
    while len(outcome) < len(tasks):
        queue = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True).stdout.split()
        states = {job_id: state for job_id, state in zip(queue[::2], queue[1::2]) if job_id.split("_")[0] == array}
        for job, task in [(job, task) for job, task in zip(jobs, tasks) if job.name not in outcome]:
            if Path(task.paths.result_pickle).exists():  # not task.done(), which asks sacct
                try:
                    outcome[job.name] = task.result() and None
                except Exception as error:  # the task's own error, or Slurm's (out of memory, ...)
                    outcome[job.name] = machinery.first_line(error, 200)
            elif task.job_id not in states and array not in states \
                    and time.time() - lost.setdefault(job.name, time.time()) > 120:  # cancelled, say
                outcome[job.name] = f"left the queue without a result: see {task.paths.stderr}"
            if job.name in outcome:
                print(f"done {job.name}" if outcome[job.name] is None else f"failed {job.name}: {outcome[job.name]}",
                      flush=True)
        line = f"[{len(outcome)} of {len(tasks)} finished; squeue: " + ", ".join(
            f"{n} {state.lower()}" for state, n in sorted(Counter(states.values()).items())) + "]"
        if line != shown_line:
            print(line, flush=True)
            shown_line = line
        time.sleep(2)
    return outcome


# The check: each figure of the stored table beside the new one


def eval_table(folder):
    """`python eval.py table FOLDER`: its text, and its rows as lists of cells."""
    done = subprocess.run([sys.executable, str(HERE / "eval.py"), "table", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        raise machinery.CLIError(f"python eval.py table {folder}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    rows = [line for line in done.stdout.splitlines() if line.startswith("|")][2:]  # after the header and ---
    return done.stdout, [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def figures(folder, spec):
    """A table row's figure in each of its runs (eval.json's spec["study"] / spec["key"] path)."""
    return [float(stored(read_evaluated(Path(folder) / name), spec["study"], *spec["key"])) * spec.get("scale", 1)
            for name in spec["runs"]]


def check(stored_folder, out):
    """The new folder's table, then each figure beside the stored one with its verdict."""
    specs = json.loads((Path(stored_folder) / "table.json").read_text())
    (text, new_rows), (_, old_rows) = eval_table(out), eval_table(stored_folder)
    print(f"\n## {out}\n\n{text}\n## {out} against {stored_folder}\n")
    print("| result | stored | new | verdict |\n| --- | --- | --- | --- |")
    verdicts = []
    for spec, old_row, new_row in zip(specs, old_rows, new_rows):
        if "runs" in spec:  # else a figure whose runs are not stored
            verdicts.append(compare.same_spread(figures(stored_folder, spec), figures(out, spec)) if "key" in spec
                            else compare.same_interval(old_row[2], new_row[2]))
            print(f"| {spec['result']} | {old_row[2]} | {new_row[2]} | {verdicts[-1]} |")
    print(f"\nreproduced {sum(v != 'differs' for v in verdicts)} of {len(verdicts)} rows")


def settings_changed(jobs, stored_folder):
    """Print a rebuilt run's settings that differ from its stored run's, other than --set's: a
    default changed since, which no flag covers."""
    for job in jobs:
        new, old = job.read("config.json"), machinery.read_config(Path(stored_folder) / job.name)
        changed = [f"{key} {new.get(key)} (stored {old.get(key)})" for key in sorted(set(new) | set(old)) if key not in
                   machinery.PLUMBING | {"resume"} | job.changed and new.get(key) != old.get(key)]
        if new and changed:
            print(f"note: {job.name}'s settings differ from the stored run's: {', '.join(changed)}")


# The command line


def parse_args(argv):
    parser = machinery.ArgumentParser(prog="sweep.py", description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add, positive = parser.add_argument, machinery.positive_int
    add("results", nargs="?", metavar="RESULTS_FOLDER", help="a stored results folder (results/toy25): its runs "
        "again, their studies, its table and the check against it")
    add("--command", help="a grid instead: a model script's command line without --out (\"python daae.py ...\")")
    add("--seeds", type=machinery.seed_value, nargs="+", help="--command: one run per seed (default: its --seed, or 0)")
    add("--set", nargs="+", metavar="KEY=VALUE", action="extend", help="a setting in every job (epochs=1000, "
        "adversarial-lr=4e-5); with --command, KEY=V1,V2 makes a grid, one run folder per combination")
    add("--studies", nargs="+", metavar="STUDY", choices=[*STUDIES["images"], *STUDIES["points"], "all", "none"],
        help="--command: the eval.py studies of each run (default all: every study of its data; none)")
    add("--out", required=True, help="the sweep's folder, one run folder per job in it")
    add("--dry-run", action="store_true", help="print each job's commands and run folder, and stop")
    add("--tensorboard", action="store_true", help="every run writes TensorBoard events too (tensorboard --logdir OUT)")
    add("--workers", type=positive, help="jobs at once (default: the cores / --threads; on Slurm, every job)")
    add("--threads", type=positive, help="threads per job, OMP_NUM_THREADS (default 1; on Slurm, --cpus-per-job)")
    add = parser.add_argument_group("Slurm (through submitit, as one job array)").add_argument
    add("--slurm", action="store_true", help="submit the jobs to Slurm instead of running them here")
    add("--partition", help="the partition (default: the cluster's default)")
    add("--time", type=positive, default=60, help="each task's time limit in minutes (default 60); a task that "
        "reaches it saves, is requeued and resumes")
    add("--cpus-per-job", type=positive, default=1, help="CPU cores per task (default 1)")
    add("--gpus-per-job", type=int, default=0, help="GPUs per task (default 0)")
    add("--mem", default="4G", help="memory per task, as sbatch's --mem (default 4G)")
    add("--signal-delay", type=positive, default=90, help="seconds before the time limit that Slurm warns a task "
        "(default 90, submitit's)")
    add("--max-requeues", type=positive, default=10, help="times a task may be requeued (default 10)")
    add("--sbatch", nargs="+", metavar="KEY=VALUE", action="extend", help="other sbatch options (account=myproject)")
    args = parser.parse_args(argv)
    if bool(args.results) == bool(args.command):
        raise machinery.CLIError("give a stored results folder (sweep.py results/toy25 --out runs/toy25) or a grid "
                                 "(--command \"python daae.py ...\"), one of the two")
    if args.results and (args.seeds or args.studies):
        raise machinery.CLIError("--seeds and --studies are for --command; a results folder's runs keep theirs")
    if args.results and Path(args.out).resolve() == Path(args.results).resolve():
        raise machinery.CLIError("--out is the stored folder itself: give a new folder, e.g. runs/toy25")
    if any("=" not in text for text in args.sbatch or []):
        raise machinery.CLIError("--sbatch: write KEY=VALUE, e.g. --sbatch account=myproject")
    if args.slurm and args.time * 60 < args.signal_delay + 90:  # Slurm warns up to a minute early (man sbatch)
        raise machinery.CLIError(f"--time {args.time}: give at least {(args.signal_delay + 149) // 60} minutes, so "
                                 f"that a task runs before Slurm's warning (--signal-delay {args.signal_delay} s)")
    return args


def main(argv=None):
    args = parse_args(argv)
    sets = parse_sets(args.set)
    if args.results:
        jobs = jobs_from_results(args.results, args.out, sets)
    else:
        studies = [study for study in args.studies or ["all"] if study != "none"]
        jobs = jobs_from_command(args.command, args.seeds, sets, args.out, studies)
    for job in jobs:
        job.tensorboard, job.changed = args.tensorboard, {key for key, _ in sets}
    if args.dry_run:
        for job in jobs:
            print(f"{job.out}:", *(f"  {shlex.join(c)}" for c in [job.command(False), *job.eval_commands(job.studies)]),
                  sep="\n")
        return
    held = {job.name: machinery.lock_holder(job.out) for job in jobs}
    for name in filter(held.get, held):
        print(f"{name}: in use by process {held[name]}; left alone", flush=True)
    todo = [job for job in jobs if not held[job.name] and job.todo()]
    threads = args.threads or (args.cpus_per_job if args.slurm else 1)
    started, outcome = time.time(), {}
    if not todo:
        print(f"nothing to do: all {len(jobs)} jobs in {args.out} are done (their runs trained, their studies in "
              "eval.json)")
    elif args.slurm:
        outcome = run_slurm(todo, args, threads)
    else:
        workers = args.workers or max(1, (os.cpu_count() or 1) // threads)
        print(f"{len(todo)} of {len(jobs)} jobs to run, {workers} at a time, {threads} thread(s) each", flush=True)
        outcome = run_local(todo, workers, threads)
    failed, busy = {name: why for name, why in outcome.items() if why}, sum(map(bool, held.values()))
    if args.results and (Path(args.results) / "table.json").exists() and not failed and not busy:
        if not (Path(args.out) / "table.json").exists():
            shutil.copyfile(Path(args.results) / "table.json", Path(args.out) / "table.json")
        settings_changed(jobs, args.results)
        check(args.results, args.out)
    print(f"{len(jobs)} jobs: {len(jobs) - len(failed) - busy} done, {len(failed)} failed"
          + (f", {busy} in use elsewhere" if busy else "") + (f"; {time.time() - started:.0f} s wall" if todo else ""))
    for name, why in failed.items():
        print(f"  {name}: {why} (its log: {Path(args.out) / name / 'sweep.log'})")
    if failed or busy:
        sys.exit(1)


if __name__ == "__main__":
    machinery.cli(main)
