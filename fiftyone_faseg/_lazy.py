"""Package attributes imported on first use, so importing a package stays light."""

import importlib


def lazy_attributes(package, table, namespace):
    """A module ``__getattr__`` resolving ``table[name]`` (a module path) on first use and
    caching the value in ``namespace`` (the package's ``globals()``)."""

    def __getattr__(name):
        module = table.get(name)
        if module is None:
            raise AttributeError("module %r has no attribute %r" % (package, name))
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
