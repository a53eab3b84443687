"""The simulated machine: time, CPUs, the scheduler, IRQs, locks, wait queues, taskqs, timers,
memory, metrics and deadlock detection. It knows nothing of allocators."""

from simcore.costs import CostTable
from simcore.cpu import CPU, Thread
from simcore.deadlock import DeadlockReport, SimulationDeadlock
from simcore.machine import Machine, MachineConfig
from simcore.memory import MemoryConfig
from simcore.metrics import SamplingConfig
from simcore.mutex import AdaptiveMutex, Mutex
from simcore.sched import Priority
from simcore.spinlock import SpinLock
from simcore.taskq import Taskq
from simcore.timer import PeriodicWork
from simcore.waitqueue import BitFlags, WaitQueue

__all__ = ["CPU", "AdaptiveMutex", "BitFlags", "CostTable", "DeadlockReport", "Machine",
           "MachineConfig", "MemoryConfig", "Mutex", "PeriodicWork", "Priority", "SamplingConfig",
           "SimulationDeadlock", "SpinLock", "Taskq", "Thread", "WaitQueue"]
