"""STUB of `sgl_kernel` for the CPU test harness of tools/sglang_cpu (never installed on a GPU machine).

sgl-kernel has no CPU build that installs here, and sglang 0.5.23 imports it at start-up (mem_cache/allocation.py
and others) for kernels its CPU paths do not call on a machine without AMX. Every name, and every submodule
(`sgl_kernel.kvcacheio`, ...), imports; calling anything raises, so a path that does need a kernel fails loudly
instead of computing something else.
"""

import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0+cpu-test-stub"


class _Missing:
    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"{self._name}: sgl_kernel is a stub in this CPU test environment "
                                  "(tools/sglang_cpu/sgl_kernel_stub)")

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self._name}.{attr}")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Missing(f"sgl_kernel.{name}")


def _module_getattr(module_name):
    def getattr_(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{module_name}.{attr}")

    return getattr_


class _StubModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes `import sgl_kernel.<anything>` give a module whose every attribute is a _Missing."""

    def find_spec(self, fullname, path, target=None):
        if fullname.startswith("sgl_kernel."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _module_getattr(spec.name)
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _StubModules())
