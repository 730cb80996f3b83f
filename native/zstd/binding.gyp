{
  "targets": [
    {
      "target_name": "zstd",
      "sources": ["zstd.c"],
      "libraries": ["-lzstd"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
