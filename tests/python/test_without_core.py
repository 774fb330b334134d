"""A training node without the compiled core: `import mpdiffuser.data` and `mpdiffuser.training`
work, a model trains and exports, and planning says what is missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_option_table_read_from_options_def_equals_the_cores(repo_root):
    from mpdiffuser import _core, option_table

    text = (repo_root / "csrc" / "include" / "mpdiffuser" / "options.def").read_text()
    assert option_table.parse(text) == _core.option_specs()
    assert option_table.table_file().read_text() == text  # the installed copy is the source's


def test_data_and_training_import_and_train_without_the_native_core(tmp_path):
    script = textwrap.dedent(f"""
        import importlib.abc, sys

        class NoCore(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "mpdiffuser._core":
                    raise ImportError("no compiled core on this node")

        sys.meta_path.insert(0, NoCore())
        import mpdiffuser.data, mpdiffuser.training
        import mpdiffuser as mpd
        from tests.python.conftest import TINY_MODEL, make_toy_dataset
        assert mpd.__version__
        assert mpd.SamplerOptions().num_candidates == 1
        data = make_toy_dataset(seed=3)
        bundle = r"{tmp_path / 'bundle'}"
        mpd.BundleSpec.fit(data, [data], TINY_MODEL).save(bundle)
        for name in ("planner", "dynamics", "reward"):
            mpd.train_model(bundle, name, [data], mpd.TrainConfig(steps=3, batch_size=8, checkpoint_every=3),
                            progress=False)
        path = mpd.export_model(bundle, r"{tmp_path / 'model.safetensors'}")
        try:
            mpd.load(path, "cpu")
        except ImportError as exc:
            print("planning:", exc)
        assert "mpdiffuser._core" not in sys.modules
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "planning: planning needs mpdiffuser's compiled core (mpdiffuser._core)" in done.stdout
