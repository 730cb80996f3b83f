{
  "targets": [
    {
      "target_name": "files",
      "sources": ["files.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
