"""What people run: the command line, one category's evaluation, the plots, the explorer.

``cli``             ``python -m pcnotes`` (fit, predict, evaluate, demo, course)
``evaluation``      fit on ``train/good``, score ``test``, the three metrics
``plots``           every figure: the notebooks, the CLI's heat maps and the explorer draw with it
``explorer``        the coreset-ratio widget (ipywidgets)
``explorer_state``  the widget's numbers, without widgets

Nothing here is imported by ``import pcnotes``: ``cli`` keeps ``--help`` free of torch.
"""
