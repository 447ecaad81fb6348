"""Analyzers that keep state over time: time windows and sessions."""

from bspump.analyzer.session import SessionAnalyzer
from bspump.analyzer.timewindow import TimeWindowAnalyzer
from bspump.processor import Analyzer

__all__ = ["Analyzer", "SessionAnalyzer", "TimeWindowAnalyzer"]
