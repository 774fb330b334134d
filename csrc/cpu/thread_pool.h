// A fixed pool of worker threads for one workspace. run() hands task t of [0, count) to thread t
// (the caller runs task 0) and returns when all are done; it never allocates.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace mpd::cpu {

class ThreadPool {
 public:
  using Task = void (*)(void* context, int index);

  explicit ThreadPool(int threads);  // threads >= 1; threads - 1 workers are started
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs task(context, t) for t = 0..count-1, count <= size(), and waits for all of them.
  void run(int count, Task task, void* context);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_, done_;
  unsigned long generation_ = 0;
  int count_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  Task task_ = nullptr;
  void* context_ = nullptr;
};

}  // namespace mpd::cpu
