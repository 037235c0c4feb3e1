// The Pod sandbox image for the tests' real node (`make k8s` builds it).
module isaaclab-ray/k8s/pause

go 1.26.0
