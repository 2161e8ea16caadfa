"""Profiling boards over SSH: device inventory (:mod:`.inventory`), transport (:mod:`.ssh`), board probe
(:mod:`.probe`, runs on the board), readiness check (:mod:`.check`), the SSH runner (:mod:`.runner`, the local
runner's interface over SSH) and parallel profiling of several boards (:mod:`.fleet`)."""
