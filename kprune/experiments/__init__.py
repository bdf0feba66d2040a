"""The experiment harness: data sources, built-in models, recipes, the run-folder runner
and the demo. It uses every layer below it and nothing imports it but the CLI.
"""
