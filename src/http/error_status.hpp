#pragma once

#include <ostream>

#include <boost/beast/http/status.hpp>

#include "core/error.hpp"

namespace imgpipe {

//! The one table from error kind to HTTP status. When adding an ErrorKind, add it here.
boost::beast::http::status ToHttpStatus(ErrorKind kind);

}  // namespace imgpipe
