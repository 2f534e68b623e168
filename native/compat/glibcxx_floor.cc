// Keeps the prebuilt addon loadable with the libstdc++ of older systems.
//
// GCC 12 gave std::condition_variable::wait(unique_lock<mutex>&) a new symbol
// version (GLIBCXX_3.4.30; the old GLIBCXX_3.4.11 one is noexcept), so an addon
// built with GCC 12 would refuse to load where libstdc++ is older: Ubuntu 20.04,
// Debian 11, RHEL 8/9, Amazon Linux 2023. The addon is linked with
// --wrap=<that symbol> (CMakeLists.txt, Linux only), which sends every call here:
// the same wait libstdc++ does, on the native handles, with no versioned symbol.
#include <condition_variable>
#include <mutex>
#include <pthread.h>

extern "C" void __wrap__ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE(
    std::condition_variable* cv, std::unique_lock<std::mutex>* lock) {
  // libstdc++ ignores the result too: it fails only for an invalid or unlocked
  // mutex, which std::unique_lock rules out.
  (void)pthread_cond_wait(cv->native_handle(), lock->mutex()->native_handle());
}
