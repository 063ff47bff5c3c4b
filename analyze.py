"""Analyses of fine-tuned task vectors: the weight-disentanglement error of a task pair.

python analyze.py                                             # demo: first two demo tasks
python analyze.py finetuning=linear DATASETS=[Digits,Shapes]
python analyze.py 'analysis.modes=[standard,linear,attention,standard@linear]'
"""

from taskmerge.app.analyze import analyze_job
from taskmerge.app.entry import run

if __name__ == "__main__":
    run(__file__, "analyze", analyze_job)
