"""What the tests share, written once.

* `cli`: the CLI in this process (`run_cli`, `CliResult`, `isolate`), and the real
  `bgtaskex` command in subprocesses (`Bgx`, `command`, `describe`).
* `daemon`: a `bgtaskex daemon` subprocess whose log goes to a file (`Daemon`).
* `journal`: the JSON-lines journal every test action and hook logs its calls to
  (`append`, `read`), and `JournalAction`, the workload action of the torture suite.
* `appdb`: the application database of the retention tests (tickets, comments, links).
* `web`: the dashboard's app in this process (Starlette's TestClient) over a real database.
* `browser`: headless Chromium (Selenium) and `bgtaskex web` in a subprocess on a free
  port (`open_browser`, `WebServer`), screenshots (`Shots`), the CSP lines of the console.
"""
