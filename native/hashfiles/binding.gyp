{
  "targets": [
    {
      "target_name": "hashfiles",
      "sources": ["hashfiles.c"],
      "libraries": ["-lisal"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-deprecated-declarations"]
    }
  ]
}
