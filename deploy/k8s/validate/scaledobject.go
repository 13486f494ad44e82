package validate

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// ScaledObject is the subset of KEDA's keda.sh/v1alpha1 ScaledObject schema
// (github.com/kedacore/keda apis/keda/v1alpha1) that a strict decode accepts: a
// field KEDA does not define fails, as the CRD's structural schema would.
type ScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ScaledObjectSpec `json:"spec"`
}

// ScaledObjectSpec mirrors KEDA's ScaledObjectSpec.
type ScaledObjectSpec struct {
	ScaleTargetRef   ScaleTarget     `json:"scaleTargetRef"`
	PollingInterval  *int32          `json:"pollingInterval,omitempty"`
	CooldownPeriod   *int32          `json:"cooldownPeriod,omitempty"`
	IdleReplicaCount *int32          `json:"idleReplicaCount,omitempty"`
	MinReplicaCount  *int32          `json:"minReplicaCount,omitempty"`
	MaxReplicaCount  *int32          `json:"maxReplicaCount,omitempty"`
	Triggers         []ScaleTriggers `json:"triggers"`
}

// ScaleTarget mirrors KEDA's ScaleTarget.
type ScaleTarget struct {
	Name                   string `json:"name"`
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

// ScaleTriggers mirrors KEDA's ScaleTriggers.
type ScaleTriggers struct {
	Type              string            `json:"type"`
	Name              string            `json:"name,omitempty"`
	UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
	Metadata          map[string]string `json:"metadata"`
	AuthenticationRef *struct {
		Name string `json:"name"`
		Kind string `json:"kind,omitempty"`
	} `json:"authenticationRef,omitempty"`
	MetricType string `json:"metricType,omitempty"`
}
