"""tablesync operator: reconciles TableSync resources into CronJobs and reports lag, overrun
and drift on their status. Entry point: ``tablesync_operator.__main__:main``."""
