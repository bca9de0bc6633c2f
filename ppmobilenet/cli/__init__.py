"""The commands (train, eval, export, infer, convert_weights, provision_lite, benchmark).

Each module has `main(argv=None) -> exit code`; tools/*.py and the console scripts call it.
Importing a command module imports no Paddle: `cli.common.run` sets the CPU up first
(`configure_cpu()`), then the command imports the package. That is why the imports of the package
sit inside the command functions here, and only here.
"""
