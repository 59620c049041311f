// File: tests/support/temp_dir.h
//
// A fresh directory under $TMPDIR for one test, removed with everything in
// it when the TempDir goes out of scope. Shared by the tests that need real
// files (job store, durability).
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace hxemu::test_support {

class TempDir {
 public:
  // `prefix` names the directory (e.g. "hxemu_job_store"), so a directory
  // left behind by a killed test says where it came from. path() is empty if
  // the directory could not be made.
  explicit TempDir(const std::string& prefix) {
    std::string pattern =
        (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX"))
            .string();
    path_ = mkdtemp(pattern.data()) == nullptr ? "" : pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace hxemu::test_support
