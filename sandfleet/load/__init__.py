"""Load: from files and command-line words to checked, immutable values, or an error naming file and line.

The playbook (:mod:`.playbook`) with its task keywords (:mod:`.keywords`) and ``sandbox:`` block
(:mod:`.sandbox_spec`), extra vars (:mod:`.extra_vars`), the operator's policy (:mod:`.policies`),
the variable-name rule (:mod:`.varnames`) and YAML that remembers positions (:mod:`.yamlsrc`).
Imports :mod:`sandfleet.errors`, :mod:`sandfleet.templating` (the syntax check) and the host
side's portable and policy modules; never run, transports or report.
"""
